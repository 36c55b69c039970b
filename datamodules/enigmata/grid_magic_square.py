"""Magic square: complete an n x n square (3x3 easy/medium, 4x4 hard) from a few givens.

Rules: the cells hold 1..n^2 each once, and every row, column and both diagonals sum to the
magic constant n(n^2+1)/2. Any completion consistent with the givens scores 1.

Generation: a random depth-first search for a 4x4 magic square takes 0.1-5 s in Python, so the
gold square is a random image of a stored seed square under moves that keep a square magic:
the same permutation of rows and columns when it commutes with i -> n-1-i (diagonals map to
diagonals), transposition, a left-right mirror, and the complement v -> n^2+1-v. The 3x3 seed
(Lo Shu) reaches all 8 3x3 magic squares; the 24 4x4 seeds (found offline by search, from
distinct orbits) reach 1312 of the 7040 4x4 squares.
"""

from __future__ import annotations

import itertools
import random

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.grid_common import GRID_FORMAT, format_grid, format_puzzle, gold_body, grid_corruptions, parse_int_grid

BLANK = "_"

SEEDS: dict[int, list[list[list[int]]]] = {
    3: [[[2, 7, 6], [9, 5, 1], [4, 3, 8]]],
    4: [
        [[4, 13, 6, 11], [1, 16, 7, 10], [15, 2, 9, 8], [14, 3, 12, 5]],
        [[14, 1, 15, 4], [3, 6, 12, 13], [10, 11, 5, 8], [7, 16, 2, 9]],
        [[5, 16, 10, 3], [2, 11, 13, 8], [15, 6, 4, 9], [12, 1, 7, 14]],
        [[5, 12, 1, 16], [10, 6, 11, 7], [15, 3, 14, 2], [4, 13, 8, 9]],
        [[16, 10, 1, 7], [5, 3, 12, 14], [11, 13, 6, 4], [2, 8, 15, 9]],
        [[1, 3, 14, 16], [10, 13, 4, 7], [15, 6, 11, 2], [8, 12, 5, 9]],
        [[10, 11, 5, 8], [15, 2, 16, 1], [6, 7, 9, 12], [3, 14, 4, 13]],
        [[4, 1, 15, 14], [12, 9, 7, 6], [13, 8, 10, 3], [5, 16, 2, 11]],
        [[5, 1, 12, 16], [10, 14, 3, 7], [8, 4, 13, 9], [11, 15, 6, 2]],
        [[9, 12, 6, 7], [5, 8, 10, 11], [4, 1, 15, 14], [16, 13, 3, 2]],
        [[4, 10, 15, 5], [7, 13, 12, 2], [9, 3, 6, 16], [14, 8, 1, 11]],
        [[13, 8, 1, 12], [11, 2, 7, 14], [4, 9, 16, 5], [6, 15, 10, 3]],
        [[8, 6, 11, 9], [15, 3, 2, 14], [1, 13, 16, 4], [10, 12, 5, 7]],
        [[6, 8, 11, 9], [12, 10, 7, 5], [1, 3, 14, 16], [15, 13, 2, 4]],
        [[16, 14, 1, 3], [4, 2, 15, 13], [9, 11, 6, 8], [5, 7, 12, 10]],
        [[15, 14, 4, 1], [3, 2, 16, 13], [10, 11, 5, 8], [6, 7, 9, 12]],
        [[1, 12, 5, 16], [15, 13, 4, 2], [10, 6, 11, 7], [8, 3, 14, 9]],
        [[7, 1, 14, 12], [15, 6, 9, 4], [10, 11, 8, 5], [2, 16, 3, 13]],
        [[5, 14, 12, 3], [11, 4, 6, 13], [8, 15, 9, 2], [10, 1, 7, 16]],
        [[5, 1, 12, 16], [10, 14, 3, 7], [15, 11, 6, 2], [4, 8, 13, 9]],
        [[6, 7, 11, 10], [12, 9, 5, 8], [13, 16, 4, 1], [3, 2, 14, 15]],
        [[10, 15, 2, 7], [16, 1, 8, 9], [3, 14, 11, 6], [5, 4, 13, 12]],
        [[8, 2, 11, 13], [9, 15, 6, 4], [5, 3, 10, 16], [12, 14, 7, 1]],
        [[10, 5, 15, 4], [11, 8, 14, 1], [6, 9, 3, 16], [7, 12, 2, 13]],
    ],
}


def magic_constant(n: int) -> int:
    return n * (n * n + 1) // 2


def is_magic(grid: list[list[int]]) -> bool:
    """Entries are 1..n^2 once each and all rows, columns and both diagonals hit the constant."""
    n = len(grid)
    target = magic_constant(n)
    if sorted(v for row in grid for v in row) != list(range(1, n * n + 1)):
        return False
    lines = [list(row) for row in grid] + [[grid[r][c] for r in range(n)] for c in range(n)]
    lines += [[grid[i][i] for i in range(n)], [grid[i][n - 1 - i] for i in range(n)]]
    return all(sum(line) == target for line in lines)


def diagonal_preserving_permutations(n: int) -> list[tuple[int, ...]]:
    """Permutations p with p(n-1-i) = n-1-p(i): applied to rows and columns alike they map both
    diagonals onto diagonals."""
    return [p for p in itertools.permutations(range(n)) if all(p[n - 1 - i] == n - 1 - p[i] for i in range(n))]


def transform(grid: list[list[int]], perm, transpose: bool, mirror: bool, complement: bool) -> list[list[int]]:
    """Apply the magic-preserving moves described in the module docstring."""
    n = len(grid)
    out = [[grid[perm[r]][perm[c]] for c in range(n)] for r in range(n)]
    if transpose:
        out = [list(col) for col in zip(*out)]
    if mirror:
        out = [row[::-1] for row in out]
    if complement:
        out = [[n * n + 1 - v for v in row] for row in out]
    return out


def random_magic_square(rng: random.Random, n: int) -> list[list[int]]:
    if n not in SEEDS:
        raise ValueError(f"magic_square: size must be one of {sorted(SEEDS)}, got {n}")
    seed = rng.choice(SEEDS[n])
    perm = rng.choice(diagonal_preserving_permutations(n))
    return transform(seed, perm, rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5)


@register
class MagicSquare(Task):
    name = "magic_square"
    category = "Grid"
    presets = {
        "easy": {"size": 3, "givens": 3},
        "medium": {"size": 3, "givens": 2},
        "hard": {"size": 4, "givens": 6},
    }
    test_knobs = [{"size": 4, "givens": 0}, {"size": 3, "givens": 8}]

    def build(self, rng: random.Random, size: int, givens: int):
        solution = random_magic_square(rng, size)
        shown_cells = set(rng.sample(range(size * size), min(givens, size * size)))
        puzzle = [[solution[r][c] if r * size + c in shown_cells else 0 for c in range(size)] for r in range(size)]
        shown = format_puzzle(puzzle, blank=BLANK)
        question = (
            f"Complete this {size}x{size} magic square. Fill every blank cell ({BLANK}) so that the numbers 1 to "
            f"{size * size} each appear exactly once, and every row, every column and both main diagonals sum to "
            f"{magic_constant(size)}. Given numbers must not change.\n\n{shown}\n\n"
            f"Answer with the completed square: {GRID_FORMAT} ({size} rows of {size} numbers)."
        )
        return question, format_grid(solution), {"puzzle": puzzle}

    def compact_question(self, metadata: dict) -> str:
        return format_puzzle(metadata["puzzle"], blank=BLANK)

    def verify(self, answer: str, metadata: dict) -> bool:
        puzzle = metadata["puzzle"]
        n = len(puzzle)
        grid = parse_int_grid(answer, n, 1, n * n)
        if grid is None:
            return False
        if any(puzzle[r][c] and puzzle[r][c] != grid[r][c] for r in range(n) for c in range(n)):
            return False
        return is_magic(grid)

    def corruptions(self, puzzle, rng):
        body = gold_body(puzzle)
        n = len(puzzle.metadata["puzzle"])
        rows = [line.split() for line in body.splitlines()]
        # Swapping the two end cells of the first row keeps the row sum but breaks the columns.
        rows[0][0], rows[0][-1] = rows[0][-1], rows[0][0]
        return grid_corruptions(body, rng, [str(v) for v in range(1, n * n + 1)]) + [format_grid(rows)]
