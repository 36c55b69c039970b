"""Kakurasu: shade cells so each row's clue equals the sum of the column numbers (1..n) of its
shaded cells and each column's clue the sum of the row numbers of its shaded cells.

Generation shades random cells and reads the clues off, so a solution always exists; any shading
matching every clue is accepted (clues such as 3 = 3 = 1 + 2 often allow several).
"""

from __future__ import annotations

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.search_parsing import parse_symbol_grid
from lit_reason.tasks.answer import extract_answer


def kakurasu_clues(shaded: list[list[bool]]) -> tuple[list[int], list[int]]:
    """(row clues, column clues) of a shading, with 1-based weights."""
    n = len(shaded)
    rows = [sum(c + 1 for c in range(n) if shaded[r][c]) for r in range(n)]
    cols = [sum(r + 1 for r in range(n) if shaded[r][c]) for c in range(n)]
    return rows, cols


def _to_text(shaded: list[list[bool]]) -> str:
    return "\n".join(" ".join("#" if cell else "." for cell in row) for row in shaded)


@register
class Kakurasu(Task):
    name = "kakurasu"
    category = "Search"
    presets = {
        "easy": {"size": 4, "fill": 0.4},
        "medium": {"size": 6, "fill": 0.4},
        "hard": {"size": 8, "fill": 0.45},
    }
    test_knobs = [{"size": 2}, {"size": 10, "fill": 0.6}]

    def build(self, rng, size, fill):
        n = size
        shaded = [[rng.random() < fill for _ in range(n)] for _ in range(n)]
        if not any(any(row) for row in shaded):
            shaded[rng.randrange(n)][rng.randrange(n)] = True
        rows, cols = kakurasu_clues(shaded)
        question = (
            f"Solve this {n}x{n} Kakurasu puzzle. Columns are numbered 1 to {n} from the left and rows 1 to {n} "
            "from the top. Shade some cells so that, for every row, the column numbers of its shaded cells add "
            "up to the row's clue, and for every column, the row numbers of its shaded cells add up to the "
            "column's clue.\n"
            f"Row clues (top to bottom): {' '.join(map(str, rows))}\n"
            f"Column clues (left to right): {' '.join(map(str, cols))}\n\n"
            f"Answer with {n} lines, one per row, each with {n} symbols separated by spaces: # for a shaded cell, "
            ". for an unshaded cell. Any shading matching every clue is accepted."
        )
        return question, _to_text(shaded), {"row_clues": rows, "col_clues": cols}

    def verify(self, answer, metadata):
        n = len(metadata["row_clues"])
        lines = parse_symbol_grid(answer, n, n, "#.")
        if lines is None:
            return False
        shaded = [[ch == "#" for ch in line] for line in lines]
        return kakurasu_clues(shaded) == (metadata["row_clues"], metadata["col_clues"])

    def corruptions(self, puzzle, rng):
        n = len(puzzle.metadata["row_clues"])
        shaded = [[ch == "#" for ch in line.replace(" ", "")] for line in extract_answer(puzzle.answer).splitlines()]
        r, c = rng.randrange(n), rng.randrange(n)
        flipped = [row[:] for row in shaded]
        flipped[r][c] = not flipped[r][c]  # changes row r's sum by c + 1
        return [_to_text(flipped), _to_text(shaded[:-1]), _to_text(shaded).replace("#", "X")]
