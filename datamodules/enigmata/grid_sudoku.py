"""Sudoku (9x9, 3x3 boxes) and sudoku2 (4x4, 2x2 boxes).

Generation: the diagonal boxes get shuffled digits and a short randomised most-constrained-cell
search completes the grid (a few ms; see :func:`solved_grid` for why not only shuffling one base
pattern, which stays as the bounded fallback). Blanks are then punched at random,
so an instance may have several completions; the verifier checks the rules and the givens, and
any valid completion scores 1.
"""

from __future__ import annotations

import random

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.grid_common import GRID_FORMAT, format_grid, format_puzzle, gold_body, grid_corruptions, parse_int_grid

BLANK = "_"


def pattern_grid(rng: random.Random, box: int) -> list[list[int]]:
    """A complete sudoku from the base pattern with shuffled bands, stacks, rows within bands,
    columns within stacks and digits (and maybe transposed). Instant, but every such grid is
    isomorphic to the one pattern (none has a swappable 'unique rectangle'), so it is only the
    fallback of :func:`solved_grid`."""
    n = box * box

    def shuffled_lines() -> list[int]:
        groups = list(range(box))
        rng.shuffle(groups)
        lines = []
        for g in groups:
            inner = list(range(box))
            rng.shuffle(inner)
            lines.extend(g * box + i for i in inner)
        return lines

    rows, cols = shuffled_lines(), shuffled_lines()
    digits = list(range(1, n + 1))
    rng.shuffle(digits)
    grid = [[digits[(box * (r % box) + r // box + c) % n] for c in cols] for r in rows]
    if rng.random() < 0.5:
        grid = [list(col) for col in zip(*grid)]
    return grid


def solved_grid(rng: random.Random, box: int, max_steps: int = 250, restarts: int = 4) -> list[list[int]]:
    """A random complete sudoku of side ``box * box``.

    The diagonal boxes are independent, so they are filled with shuffled digits; the rest is
    completed by randomised depth-first search on the most constrained cell (bit masks), which
    usually needs 60-90 steps (about 1 ms) for 9x9. A run that gets stuck past ``max_steps`` is
    restarted (heavy-tailed search: restarts beat waiting). Unlike shuffling one base pattern
    this reaches grids of every shape; if all restarts fail it falls back to :func:`pattern_grid`."""
    n = box * box
    box_of = [(i // n // box) * box + (i % n) // box for i in range(n * n)]
    for _restart in range(restarts):
        grid = [0] * (n * n)
        rows, cols, boxes = [0] * n, [0] * n, [0] * n

        def put(i: int, v: int) -> None:
            """Toggle digit v at cell i (calling twice undoes it)."""
            bit = 1 << v
            rows[i // n] ^= bit
            cols[i % n] ^= bit
            boxes[box_of[i]] ^= bit
            grid[i] = v if grid[i] != v else 0

        for b in range(box):
            digits = list(range(1, n + 1))
            rng.shuffle(digits)
            for k, v in enumerate(digits):
                put((b * box + k // box) * n + b * box + k % box, v)
        steps = [0]

        def search() -> bool:
            steps[0] += 1
            if steps[0] > max_steps:
                return False
            best, best_options = -1, None
            for i in range(n * n):
                if grid[i]:
                    continue
                used = rows[i // n] | cols[i % n] | boxes[box_of[i]]
                options = [v for v in range(1, n + 1) if not used >> v & 1]
                if best_options is None or len(options) < len(best_options):
                    best, best_options = i, options
                    if len(options) <= 1:
                        break
            if best < 0:
                return True
            rng.shuffle(best_options)
            for v in best_options:
                put(best, v)
                if search():
                    return True
                put(best, v)
            return False

        if search():
            return [grid[r * n : (r + 1) * n] for r in range(n)]
    return pattern_grid(rng, box)


def is_valid_sudoku(grid: list[list[int]], box: int) -> bool:
    """Every row, column and box of a complete grid holds each digit 1..box^2 once."""
    n = box * box
    full = set(range(1, n + 1))
    if any(set(row) != full for row in grid):
        return False
    if any({grid[r][c] for r in range(n)} != full for c in range(n)):
        return False
    for br in range(0, n, box):
        for bc in range(0, n, box):
            if {grid[r][c] for r in range(br, br + box) for c in range(bc, bc + box)} != full:
                return False
    return True


class _SudokuBase(Task):
    category = "Grid"
    box: int

    def build(self, rng: random.Random, blanks_min: int, blanks_max: int):
        n = self.box * self.box
        solution = solved_grid(rng, self.box)
        blanks = rng.randint(blanks_min, min(blanks_max, n * n))
        holes = set(rng.sample(range(n * n), blanks))
        puzzle = [[0 if r * n + c in holes else solution[r][c] for c in range(n)] for r in range(n)]
        shown = format_puzzle(puzzle, blank=BLANK)
        question = (
            f"Solve this {n}x{n} sudoku. Fill every blank cell ({BLANK}) with a digit from 1 to {n} so that "
            f"every row, every column and every {self.box}x{self.box} box contains each digit from 1 to {n} exactly once. "
            f"Given digits must not change.\n\n{shown}\n\n"
            f"Answer with the completed grid: {GRID_FORMAT} ({n} rows of {n} digits)."
        )
        return question, format_grid(solution), {"puzzle": puzzle, "box": self.box}

    def compact_question(self, metadata: dict) -> str:
        return format_puzzle(metadata["puzzle"], blank=BLANK)

    def verify(self, answer: str, metadata: dict) -> bool:
        box = metadata["box"]
        n = box * box
        grid = parse_int_grid(answer, n, 1, n)
        if grid is None:
            return False
        puzzle = metadata["puzzle"]
        if any(puzzle[r][c] and puzzle[r][c] != grid[r][c] for r in range(n) for c in range(n)):
            return False
        return is_valid_sudoku(grid, box)

    def corruptions(self, puzzle, rng):
        body = gold_body(puzzle)
        wrong = grid_corruptions(body, rng, [str(d) for d in range(1, self.box * self.box + 1)])
        # A swap of two cells in one row keeps the row a permutation but breaks a column or a given.
        rows = [line.split() for line in body.splitlines()]
        rows[0][0], rows[0][-1] = rows[0][-1], rows[0][0]
        return wrong + [format_grid(rows)]


@register
class Sudoku(_SudokuBase):
    """9x9 sudoku; blanks 10-20 / 20-35 / 35-50 as in Enigmata."""

    name = "sudoku"
    box = 3
    presets = {
        "easy": {"blanks_min": 10, "blanks_max": 20},
        "medium": {"blanks_min": 20, "blanks_max": 35},
        "hard": {"blanks_min": 35, "blanks_max": 50},
    }
    test_knobs = [{"blanks_min": 60, "blanks_max": 64}, {"blanks_min": 1, "blanks_max": 1}]


@register
class Sudoku2(_SudokuBase):
    """4x4 sudoku with 2x2 boxes."""

    name = "sudoku2"
    box = 2
    presets = {
        "easy": {"blanks_min": 4, "blanks_max": 6},
        "medium": {"blanks_min": 6, "blanks_max": 9},
        "hard": {"blanks_min": 9, "blanks_max": 12},
    }
    test_knobs = [{"blanks_min": 16, "blanks_max": 16}, {"blanks_min": 1, "blanks_max": 2}]
