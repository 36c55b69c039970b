"""Binario (takuzu): fill a grid with 0 and 1 under counting, adjacency and uniqueness rules.

Rules: every row and column holds as many 0s as 1s, no three equal digits are adjacent in a row
or column, and (knob ``unique_lines``) no two rows and no two columns are identical. The gold grid
is built row by row from the precomputed list of legal rows; blanks are punched at random, so an
instance may have several completions and the verifier checks the rules and the givens.
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.grid_common import GRID_FORMAT, format_grid, format_puzzle, gold_body, grid_corruptions, parse_grid

BLANK = "_"


def no_triple(line) -> bool:
    """No three consecutive equal values."""
    return all(not (line[i] == line[i + 1] == line[i + 2]) for i in range(len(line) - 2))


@lru_cache(maxsize=None)
def legal_rows(n: int) -> tuple[tuple[int, ...], ...]:
    """All balanced 0/1 rows of even length ``n`` without three equal neighbours."""
    return tuple(row for row in itertools.product((0, 1), repeat=n) if sum(row) == n // 2 and no_triple(row))


def is_valid_binario(grid: list[list[int]], unique_lines: bool) -> bool:
    n = len(grid)
    cols = [tuple(grid[r][c] for r in range(n)) for c in range(n)]
    rows = [tuple(row) for row in grid]
    for line in rows + cols:
        if sum(line) * 2 != n or not no_triple(line):
            return False
    if unique_lines and (len(set(rows)) != n or len(set(cols)) != n):
        return False
    return True


def random_solution(rng: random.Random, n: int, unique_lines: bool, max_steps: int = 300) -> list[list[int]]:
    """A random valid grid: depth-first over legal rows in random order, pruning columns that
    overflow a digit or get three equal in a row. The search is heavy-tailed (10x10 runs take
    from 10 ms to seconds), so a run is cut after ``max_steps`` rows tried and restarted."""
    candidates = list(legal_rows(n))
    half = n // 2
    rows: list[tuple[int, ...]] = []
    steps = [0]

    def column_ok(col: int) -> bool:
        values = [row[col] for row in rows]
        ones = sum(values)
        if ones > half or len(values) - ones > half:
            return False
        return len(values) < 3 or not (values[-1] == values[-2] == values[-3])

    def extend() -> bool:
        if len(rows) == n:
            if unique_lines:
                cols = {tuple(row[c] for row in rows) for c in range(n)}
                return len(cols) == n
            return True
        order = candidates[:]
        rng.shuffle(order)
        for row in order:
            if unique_lines and row in rows:
                continue
            steps[0] += 1
            if steps[0] > max_steps:
                return False
            rows.append(row)
            if all(column_ok(c) for c in range(n)) and extend():
                return True
            rows.pop()
        return False

    for _restart in range(200):
        rows.clear()
        steps[0] = 0
        if extend():
            return [list(row) for row in rows]
    raise RuntimeError(f"binario: no {n}x{n} grid found; use an even size from 4 to 12")


@register
class Binario(Task):
    name = "binario"
    category = "Grid"
    presets = {
        "easy": {"size": 4, "blank_fraction": 0.5, "unique_lines": 1},
        "medium": {"size": 6, "blank_fraction": 0.55, "unique_lines": 1},
        "hard": {"size": 8, "blank_fraction": 0.6, "unique_lines": 1},
    }
    test_knobs = [{"size": 10, "blank_fraction": 0.7}, {"unique_lines": 0, "blank_fraction": 1.0}]

    def build(self, rng: random.Random, size: int, blank_fraction: float, unique_lines: int):
        if size < 4 or size % 2:
            raise ValueError(f"binario: size must be even and >= 4, got {size}")
        solution = random_solution(rng, size, bool(unique_lines))
        cells = size * size
        holes = set(rng.sample(range(cells), round(cells * blank_fraction)))
        puzzle = [[-1 if r * size + c in holes else solution[r][c] for c in range(size)] for r in range(size)]
        shown = format_puzzle(puzzle, empty=-1, blank=BLANK)
        unique_rule = " No two rows may be identical, and no two columns may be identical." if unique_lines else ""
        question = (
            f"Solve this {size}x{size} binary puzzle. Fill every blank cell ({BLANK}) with 0 or 1 so that: "
            f"every row and every column contains exactly {size // 2} zeros and {size // 2} ones; "
            f"no three equal digits are next to each other in any row or column.{unique_rule} "
            f"Given digits must not change.\n\n{shown}\n\n"
            f"Answer with the completed grid: {GRID_FORMAT} ({size} rows of {size} digits 0/1)."
        )
        return question, format_grid(solution), {"puzzle": puzzle, "unique_lines": int(unique_lines)}

    def verify(self, answer: str, metadata: dict) -> bool:
        puzzle = metadata["puzzle"]
        n = len(puzzle)
        tokens = parse_grid(answer, n, n, ("0", "1"), max_token_len=1)
        if tokens is None:
            return False
        grid = [[int(t) for t in row] for row in tokens]
        if any(puzzle[r][c] >= 0 and puzzle[r][c] != grid[r][c] for r in range(n) for c in range(n)):
            return False
        return is_valid_binario(grid, bool(metadata["unique_lines"]))

    def corruptions(self, puzzle, rng):
        body = gold_body(puzzle)
        rows = [line.split() for line in body.splitlines()]
        wrong_symbol = format_grid([["2" if (r, c) == (0, 0) else v for c, v in enumerate(row)] for r, row in enumerate(rows)])
        # Flipping a whole row keeps it balanced but unbalances every column.
        flipped = [row[:] for row in rows]
        flipped[0] = ["1" if v == "0" else "0" for v in flipped[0]]
        return grid_corruptions(body, rng, ["0", "1"]) + [wrong_symbol, format_grid(flipped)]
