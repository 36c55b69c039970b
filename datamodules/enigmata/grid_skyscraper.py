"""Skyscraper and sum_skyscraper: a latin square of building heights with edge clues.

Rules: an n x n grid of heights 1..n, each once per row and column; a clue outside the grid
says, looking into its row or column from that side, how many buildings are visible (a building
is hidden by any taller one in front of it) - or, in sum_skyscraper, the SUM of the visible
heights. The gold grid is a random latin square and the clues are read off it, so a solution
exists; the verifier checks the latin property and every shown clue, so any valid grid scores 1.
"""

from __future__ import annotations

import random

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.grid_common import GRID_FORMAT, format_grid, gold_body, grid_corruptions, is_latin, parse_int_grid, random_latin_square

HIDDEN = "_"
SIDES = ("top", "bottom", "left", "right")


def visible(line: list[int]) -> list[int]:
    """Heights seen from the start of ``line``: each one taller than everything before it."""
    seen, tallest = [], 0
    for h in line:
        if h > tallest:
            seen.append(h)
            tallest = h
    return seen


def side_lines(grid: list[list[int]]) -> dict[str, list[list[int]]]:
    """For each side, the lines of the grid as seen from that side (nearest cell first)."""
    n = len(grid)
    cols = [[grid[r][c] for r in range(n)] for c in range(n)]
    return {
        "top": cols,
        "bottom": [col[::-1] for col in cols],
        "left": [list(row) for row in grid],
        "right": [list(row)[::-1] for row in grid],
    }


def clues_of(grid: list[list[int]], use_sum: bool) -> dict[str, list[int]]:
    measure = (lambda seen: sum(seen)) if use_sum else len
    return {side: [measure(visible(line)) for line in lines] for side, lines in side_lines(grid).items()}


class _SkyscraperBase(Task):
    category = "Grid"
    use_sum: bool

    def build(self, rng: random.Random, size_min: int, size_max: int, clue_fraction: float):
        n = rng.randint(size_min, size_max)
        solution = random_latin_square(rng, n)
        clues = clues_of(solution, self.use_sum)
        shown = {side: [v if rng.random() < clue_fraction else None for v in values] for side, values in clues.items()}
        what = "the SUM of the heights of the visible buildings" if self.use_sum else "how many buildings are visible"
        fmt = lambda values: " ".join(HIDDEN if v is None else str(v) for v in values)  # noqa: E731
        question = (
            f"Skyscrapers: fill a {n}x{n} grid with building heights 1 to {n} so that each height appears exactly "
            f"once in every row and every column. A clue outside the grid tells {what} when looking into that row "
            "or column from that side; a taller building hides every shorter one behind it. "
            f"A {HIDDEN} means no clue.\n\n"
            f"Top clues (columns left to right, looking down): {fmt(shown['top'])}\n"
            f"Bottom clues (columns left to right, looking up): {fmt(shown['bottom'])}\n"
            f"Left clues (rows top to bottom, looking right): {fmt(shown['left'])}\n"
            f"Right clues (rows top to bottom, looking left): {fmt(shown['right'])}\n\n"
            f"Answer with the grid of heights: {GRID_FORMAT} ({n} rows of {n} numbers)."
        )
        return question, format_grid(solution), {"size": n, "clues": shown, "use_sum": int(self.use_sum)}

    def verify(self, answer: str, metadata: dict) -> bool:
        n = metadata["size"]
        grid = parse_int_grid(answer, n, 1, n)
        if grid is None or not is_latin(grid, n):
            return False
        actual = clues_of(grid, bool(metadata["use_sum"]))
        for side in SIDES:
            if any(want is not None and want != got for want, got in zip(metadata["clues"][side], actual[side])):
                return False
        return True

    def corruptions(self, puzzle, rng):
        body = gold_body(puzzle)
        n = puzzle.metadata["size"]
        wrong = grid_corruptions(body, rng, [str(v) for v in range(1, n + 1)])
        # Swapping two whole rows keeps the latin property; it breaks a clue unless no clue sees it.
        rows = body.splitlines()
        swapped = None
        for i in range(n):
            for j in range(i + 1, n):
                candidate = rows[:]
                candidate[i], candidate[j] = candidate[j], candidate[i]
                if not self.verify("\n".join(candidate), puzzle.metadata):
                    swapped = "\n".join(candidate)
                    break
            if swapped:
                break
        return wrong + ([swapped] if swapped else [])


@register
class Skyscraper(_SkyscraperBase):
    """Visibility-count clues; n 3-4 / 5-6 / 7-8 as in Enigmata."""

    name = "skyscraper"
    use_sum = False
    presets = {
        "easy": {"size_min": 3, "size_max": 4, "clue_fraction": 1.0},
        "medium": {"size_min": 5, "size_max": 6, "clue_fraction": 1.0},
        "hard": {"size_min": 7, "size_max": 8, "clue_fraction": 1.0},
    }
    test_knobs = [{"clue_fraction": 0.5}, {"size_min": 9, "size_max": 9}]


@register
class SumSkyscraper(_SkyscraperBase):
    """Clues are sums of the visible heights."""

    name = "sum_skyscraper"
    use_sum = True
    presets = {
        "easy": {"size_min": 3, "size_max": 4, "clue_fraction": 1.0},
        "medium": {"size_min": 5, "size_max": 6, "clue_fraction": 1.0},
        "hard": {"size_min": 7, "size_max": 8, "clue_fraction": 1.0},
    }
    test_knobs = [{"clue_fraction": 0.5}, {"size_min": 9, "size_max": 9}]
