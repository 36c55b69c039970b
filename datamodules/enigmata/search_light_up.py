"""Light Up (Akari): place bulbs on white cells so every white cell is lit (a bulb lights its
row and column until a black cell), no bulb lights another, and every numbered black cell has
exactly that many bulbs orthogonally next to it.

Generation plants a solution: random black cells, then bulbs dropped one by one on random unlit
cells (an unlit cell never sees a bulb, so bulbs never see each other) until all is lit; a share
of the black cells then shows its bulb count. Any valid placement is accepted.
"""

from __future__ import annotations

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.search_parsing import format_coordinates, parse_coordinates
from lit_reason.tasks.answer import extract_answer

ORTHOGONAL = ((1, 0), (-1, 0), (0, 1), (0, -1))


def lit_by(grid: list[str], r: int, c: int) -> set[tuple[int, int]]:
    """White cells lit by a bulb at (r, c), the bulb's own cell included."""
    n = len(grid)
    lit = {(r, c)}
    for dr, dc in ORTHOGONAL:
        i, j = r + dr, c + dc
        while 0 <= i < n and 0 <= j < n and grid[i][j] == ".":
            lit.add((i, j))
            i, j = i + dr, j + dc
    return lit


def check_light_up(grid: list[str], bulbs: list[tuple[int, int]]) -> bool:
    """``grid`` rows: '.' white, '#' black, '0'-'4' numbered black; ``bulbs`` 0-based cells."""
    n = len(grid)
    placed = set(bulbs)
    if len(placed) != len(bulbs):
        return False
    if any(not (0 <= r < n and 0 <= c < n) or grid[r][c] != "." for r, c in placed):
        return False
    lit: set[tuple[int, int]] = set()
    for r, c in placed:
        beams = lit_by(grid, r, c)
        if len(beams & placed) > 1:  # sees another bulb
            return False
        lit |= beams
    if any(grid[r][c] == "." and (r, c) not in lit for r in range(n) for c in range(n)):
        return False
    for r in range(n):
        for c in range(n):
            if grid[r][c].isdigit():
                count = sum((r + dr, c + dc) in placed for dr, dc in ORTHOGONAL)
                if count != int(grid[r][c]):
                    return False
    return True


@register
class LightUp(Task):
    name = "light_up"
    category = "Search"
    presets = {
        "easy": {"size": 6, "black_fraction": 0.2, "clue_fraction": 0.8},
        "medium": {"size": 8, "black_fraction": 0.2, "clue_fraction": 0.6},
        "hard": {"size": 10, "black_fraction": 0.2, "clue_fraction": 0.5},
    }
    test_knobs = [{"size": 3}, {"size": 12, "black_fraction": 0.35, "clue_fraction": 1.0}]

    def build(self, rng, size, black_fraction, clue_fraction):
        n = size
        cells = [(r, c) for r in range(n) for c in range(n)]
        black = set(rng.sample(cells, round(black_fraction * n * n)))
        grid = ["".join("#" if (r, c) in black else "." for c in range(n)) for r in range(n)]
        unlit = [cell for cell in cells if cell not in black]
        bulbs = []
        lit: set[tuple[int, int]] = set()
        while unlit:
            bulb = rng.choice(unlit)
            bulbs.append(bulb)
            lit |= lit_by(grid, *bulb)
            unlit = [cell for cell in unlit if cell not in lit]
        placed = set(bulbs)
        rows = [list(row) for row in grid]
        for r, c in sorted(black):
            if rng.random() < clue_fraction:
                rows[r][c] = str(sum((r + dr, c + dc) in placed for dr, dc in ORTHOGONAL))
        grid = ["".join(row) for row in rows]
        question = (
            f"Solve this {n}x{n} Light Up (Akari) puzzle. '.' is a white cell, '#' a black cell and a digit a "
            f"black cell with a number. Rows are numbered 1 to {n} from the top, columns 1 to {n} from the left.\n"
            + "\n".join(" ".join(row) for row in grid)
            + "\n\nPlace light bulbs on white cells so that: (1) every white cell is lit; a bulb lights its own cell "
            "and every white cell in its row and column until a black cell or the edge blocks the light; "
            "(2) no bulb is lit by another bulb; (3) each numbered black cell has exactly that many bulbs in the "
            "cells directly above, below, left and right of it.\n"
            "Answer with the bulb cells as (row,column) pairs separated by spaces, for example (1,2) (3,5) ... . "
            "Any placement obeying all rules is accepted."
        )
        return question, format_coordinates(sorted(bulbs)), {"grid": grid}

    def verify(self, answer, metadata):
        grid = metadata["grid"]
        pairs = parse_coordinates(answer, len(grid) ** 2)
        return pairs is not None and check_light_up(grid, [(r - 1, c - 1) for r, c in pairs])

    def corruptions(self, puzzle, rng):
        grid = puzzle.metadata["grid"]
        n = len(grid)
        bulbs = [(r - 1, c - 1) for r, c in parse_coordinates(extract_answer(puzzle.answer), n * n)]
        others = [(r, c) for r in range(n) for c in range(n) if grid[r][c] == "." and (r, c) not in bulbs]
        blacks = [(r, c) for r in range(n) for c in range(n) if grid[r][c] != "."]
        out = [format_coordinates(sorted(bulbs[1:]))]  # the removed bulb's cell is lit by no other bulb
        if others:
            out.append(format_coordinates(sorted([*bulbs, rng.choice(others)])))  # every white cell is lit, so it sees a bulb
        if blacks:
            out.append(format_coordinates(sorted([*bulbs, rng.choice(blacks)])))  # a bulb on a black cell
        return out
