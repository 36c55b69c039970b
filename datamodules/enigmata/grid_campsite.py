"""Campsite (tents and trees): place one tent per tree.

Rules: every tree is paired with its own tent in an orthogonally adjacent cell (a perfect
matching between trees and tents), the number of tents in every row and column equals its clue,
and no two tents touch, not even diagonally (the public Enigmata verifier forgot diagonals).
The generator places non-touching tents first and then gives each tent a tree next to it, so a
solution exists by construction; the verifier checks every rule, including the matching
(Kuhn's augmenting paths), so any valid placement scores 1.
"""

from __future__ import annotations

import random

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.grid_common import GRID_FORMAT, format_grid, gold_body, grid_corruptions, neighbours4, neighbours8, parse_grid

TREE, TENT, EMPTY = "T", "A", "."


def has_perfect_matching(trees: list[tuple[int, int]], tents: set[tuple[int, int]], n_rows: int, n_cols: int) -> bool:
    """Whether every tree can be paired with a distinct orthogonally adjacent tent (and the
    counts are equal)."""
    if len(trees) != len(tents):
        return False
    owner: dict[tuple[int, int], int] = {}

    def augment(tree_index: int, seen: set) -> bool:
        r, c = trees[tree_index]
        for cell in neighbours4(r, c, n_rows, n_cols):
            if cell in tents and cell not in seen:
                seen.add(cell)
                if cell not in owner or augment(owner[cell], seen):
                    owner[cell] = tree_index
                    return True
        return False

    return all(augment(i, set()) for i in range(len(trees)))


def place_tents_and_trees(rng: random.Random, n_rows: int, n_cols: int, n_tents: int):
    """Greedy random placement of up to ``n_tents`` non-touching tents, each with its own tree."""
    tents: set[tuple[int, int]] = set()
    trees: set[tuple[int, int]] = set()
    cells = [(r, c) for r in range(n_rows) for c in range(n_cols)]
    rng.shuffle(cells)
    for cell in cells:
        if len(tents) == n_tents:
            break
        if cell in trees or any(nb in tents for nb in neighbours8(*cell, n_rows, n_cols)):
            continue
        spots = [nb for nb in neighbours4(*cell, n_rows, n_cols) if nb not in trees and nb not in tents]
        if not spots:
            continue
        tents.add(cell)
        trees.add(rng.choice(spots))
    return tents, trees


@register
class Campsite(Task):
    name = "campsite"
    category = "Grid"
    presets = {
        "easy": {"rows": 5, "cols": 5, "tent_density": 0.2},
        "medium": {"rows": 7, "cols": 7, "tent_density": 0.2},
        "hard": {"rows": 10, "cols": 10, "tent_density": 0.2},
    }
    test_knobs = [{"rows": 4, "cols": 9, "tent_density": 0.3}, {"rows": 12, "cols": 12, "tent_density": 0.1}]

    def build(self, rng: random.Random, rows: int, cols: int, tent_density: float):
        n_tents = max(1, round(rows * cols * tent_density))
        tents, trees = place_tents_and_trees(rng, rows, cols, n_tents)
        solution = [[TENT if (r, c) in tents else TREE if (r, c) in trees else EMPTY for c in range(cols)] for r in range(rows)]
        row_counts = [sum((r, c) in tents for c in range(cols)) for r in range(rows)]
        col_counts = [sum((r, c) in tents for r in range(rows)) for c in range(cols)]
        shown = format_grid([[TREE if cell == TREE else EMPTY for cell in row] for row in solution])
        question = (
            f"Tents and trees on a {rows}x{cols} grid ({TREE} = tree, {EMPTY} = empty cell). Place tents ({TENT}) on empty "
            "cells so that: every tree is paired with exactly one tent in a cell directly above, below, left or right "
            "of it, and every tent belongs to exactly one tree (so there are as many tents as trees); "
            "no two tents touch each other, not even diagonally; and each row and column holds exactly the "
            "number of tents given below.\n\n"
            f"{shown}\n\n"
            f"Tents per row (top to bottom): {' '.join(map(str, row_counts))}\n"
            f"Tents per column (left to right): {' '.join(map(str, col_counts))}\n\n"
            f"Answer with the full grid using {TREE}, {TENT} and {EMPTY}: {GRID_FORMAT} ({rows} rows of {cols} cells)."
        )
        metadata = {
            "rows": rows,
            "cols": cols,
            "trees": sorted([r, c] for r, c in trees),
            "row_counts": row_counts,
            "col_counts": col_counts,
        }
        return question, format_grid(solution), metadata

    def verify(self, answer: str, metadata: dict) -> bool:
        n_rows, n_cols = metadata["rows"], metadata["cols"]
        grid = parse_grid(answer, n_rows, n_cols, (TREE, TENT, EMPTY), max_token_len=1)
        if grid is None:
            return False
        trees = [tuple(t) for t in metadata["trees"]]
        if {(r, c) for r in range(n_rows) for c in range(n_cols) if grid[r][c] == TREE} != set(trees):
            return False
        tents = {(r, c) for r in range(n_rows) for c in range(n_cols) if grid[r][c] == TENT}
        if [sum(row[c] == TENT for c in range(n_cols)) for row in grid] != metadata["row_counts"]:
            return False
        if [sum(grid[r][c] == TENT for r in range(n_rows)) for c in range(n_cols)] != metadata["col_counts"]:
            return False
        if any(nb in tents for cell in tents for nb in neighbours8(*cell, n_rows, n_cols)):
            return False
        return has_perfect_matching(trees, tents, n_rows, n_cols)

    def corruptions(self, puzzle, rng):
        body = gold_body(puzzle)
        rows = [line.split() for line in body.splitlines()]
        # Move one tent to another empty cell of its row: the row count still holds, a column's breaks.
        moved = [row[:] for row in rows]
        for r, row in enumerate(moved):
            if TENT in row and EMPTY in row:
                tent_col, empty_col = row.index(TENT), row.index(EMPTY)
                row[tent_col], row[empty_col] = EMPTY, TENT
                break
        return grid_corruptions(body, rng, [TREE, TENT, EMPTY]) + [format_grid(moved)]
