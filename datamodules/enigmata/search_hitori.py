"""Hitori: shade cells so no number repeats among the unshaded cells of any row or column,
no two shaded cells touch orthogonally, and the unshaded cells stay connected.

Generation plants a solution: a random Latin square (no repeats anywhere), a random shading
that obeys the adjacency and connectivity rules, and each shaded cell overwritten with the value
of an unshaded cell in its row or column (so every shaded cell is a real duplicate). Any valid
shading is accepted; uniqueness is not claimed.
"""

from __future__ import annotations

import random
from collections import deque

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.search_parsing import parse_symbol_grid
from lit_reason.tasks.answer import extract_answer

NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def random_latin_square(rng: random.Random, n: int) -> list[list[int]]:
    """A cyclic Latin square with rows, columns and symbols shuffled (values 1..n)."""
    rows, cols, symbols = rng.sample(range(n), n), rng.sample(range(n), n), rng.sample(range(1, n + 1), n)
    return [[symbols[(rows[r] + cols[c]) % n] for c in range(n)] for r in range(n)]


def cells_connected(n: int, open_cells: set[tuple[int, int]]) -> bool:
    """True if the cells in ``open_cells`` form one orthogonally connected region."""
    if not open_cells:
        return True
    start = next(iter(sorted(open_cells)))
    seen, queue = {start}, deque([start])
    while queue:
        r, c = queue.popleft()
        for dr, dc in NEIGHBOURS:
            nxt = (r + dr, c + dc)
            if nxt in open_cells and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return len(seen) == len(open_cells)


def check_hitori(grid: list[list[int]], shaded: set[tuple[int, int]]) -> bool:
    """All three Hitori rules for a shading of ``grid``."""
    n = len(grid)
    for r, c in shaded:
        if any((r + dr, c + dc) in shaded for dr, dc in NEIGHBOURS):
            return False
    for i in range(n):
        row = [grid[i][c] for c in range(n) if (i, c) not in shaded]
        col = [grid[r][i] for r in range(n) if (r, i) not in shaded]
        if len(set(row)) != len(row) or len(set(col)) != len(col):
            return False
    unshaded = {(r, c) for r in range(n) for c in range(n)} - shaded
    return cells_connected(n, unshaded)


def shading_to_text(n: int, shaded: set[tuple[int, int]]) -> str:
    return "\n".join(" ".join("#" if (r, c) in shaded else "." for c in range(n)) for r in range(n))


@register
class Hitori(Task):
    name = "hitori"
    category = "Search"
    presets = {
        "easy": {"size": 5, "shade_fraction": 0.2},
        "medium": {"size": 7, "shade_fraction": 0.25},
        "hard": {"size": 9, "shade_fraction": 0.3},
    }
    test_knobs = [{"size": 3}, {"size": 11, "shade_fraction": 0.1}]

    def build(self, rng, size, shade_fraction):
        n = size
        grid = random_latin_square(rng, n)
        cells = [(r, c) for r in range(n) for c in range(n)]
        unshaded = set(cells)
        shaded: set[tuple[int, int]] = set()
        target = max(1, round(shade_fraction * n * n))
        for cell in rng.sample(cells, len(cells)):
            if len(shaded) >= target:
                break
            r, c = cell
            if any((r + dr, c + dc) in shaded for dr, dc in NEIGHBOURS):
                continue
            unshaded.discard(cell)
            if cells_connected(n, unshaded):
                shaded.add(cell)
            else:
                unshaded.add(cell)
        for r, c in sorted(shaded):
            donors = [(r, j) for j in range(n) if (r, j) not in shaded] + [(i, c) for i in range(n) if (i, c) not in shaded]
            dr, dc = rng.choice(donors)
            grid[r][c] = grid[dr][dc]
        question = (
            f"Solve this {n}x{n} Hitori puzzle:\n"
            + "\n".join(" ".join(map(str, row)) for row in grid)
            + "\n\nShade some cells so that: (1) no number appears more than once among the unshaded cells of "
            "any row or column; (2) no two shaded cells are orthogonally adjacent; (3) all unshaded cells form "
            "one orthogonally connected region.\n"
            f"Answer with {n} lines, one per row, each with {n} symbols separated by spaces: # for a shaded cell, "
            ". for an unshaded cell. Any shading obeying all three rules is accepted."
        )
        return question, shading_to_text(n, shaded), {"grid": grid}

    def verify(self, answer, metadata):
        grid = metadata["grid"]
        n = len(grid)
        rows = parse_symbol_grid(answer, n, n, "#.")
        if rows is None:
            return False
        shaded = {(r, c) for r in range(n) for c in range(n) if rows[r][c] == "#"}
        return check_hitori(grid, shaded)

    def corruptions(self, puzzle, rng):
        n = len(puzzle.metadata["grid"])
        rows = extract_answer(puzzle.answer).replace(" ", "").splitlines()
        shaded = {(r, c) for r in range(n) for c in range(n) if rows[r][c] == "#"}
        out = ["\n".join(" ".join(row) for row in rows[:-1])]  # a row missing
        if shaded:
            cell = rng.choice(sorted(shaded))
            out.append(shading_to_text(n, shaded - {cell}))  # leaves a duplicate unshaded
            r, c = cell
            touching = [(r + dr, c + dc) for dr, dc in NEIGHBOURS if 0 <= r + dr < n and 0 <= c + dc < n]
            out.append(shading_to_text(n, shaded | {rng.choice(touching)}))  # two shaded cells touch
        return out
