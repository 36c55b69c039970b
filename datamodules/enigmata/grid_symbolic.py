"""symbolic_hard: a grid of numbers or symbols that follows a stated rule family, with cells
replaced by ``?``; the answer is the missing values in reading order.

Enigmata drew its symbolic matrix puzzles from a fixed pool; here each instance picks a rule
family, states it (its parameters stay hidden), builds a grid from random parameters and hides
cells. Families:
  * row_ap   - every row is an arithmetic progression (own start and step);
  * row_op   - in every row, third = first (op) second, one op from + - x for all rows;
  * shift    - every row is the row above rotated left by the same hidden number of places;
  * grid_ap  - every row AND every column is an arithmetic progression;
  * latin    - every row and column holds each symbol exactly once.
The hidden cells are kept only when an exact deduction (family by family: two points fix a
progression, all operations / all shifts consistent with the visible cells, counting latin
completions) shows the family forces one completion, so the verifier, which checks that the
completed grid obeys the stated family, accepts exactly the gold values.
"""

from __future__ import annotations

import random

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.grid_common import format_grid, gold_body, random_latin_square

MISSING = "?"
FAMILIES = ("row_ap", "row_op", "shift", "grid_ap", "latin")
SYMBOLS = "ABCDEFGHJKMNPQRSTUVWXYZ"
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b}
AMBIGUOUS = "ambiguous"

RULE_TEXT = {
    "row_ap": "every row is an arithmetic progression (each row has its own start and its own integer step)",
    "row_op": "in every row the third number equals the first number combined with the second by one operation: "
    "addition, subtraction (first minus second) or multiplication; the same operation is used in every row",
    "shift": "every row is the row above it rotated cyclically to the left by the same number of places "
    "(at least 1 and less than the row length) for every pair of consecutive rows",
    "grid_ap": "every row and every column is an arithmetic progression with an integer step",
    "latin": "every row and every column contains each of the symbols {symbols} exactly once",
}

Grid = list[list]  # cells: int or str, None where hidden


# ----- grid construction -------------------------------------------------------------------

def make_grid(rng: random.Random, family: str, size: int) -> Grid:
    if family == "row_ap":
        return [[start + step * c for c in range(size)] for start, step in ((rng.randint(1, 20), rng.randint(-4, 9)) for _ in range(size))]
    if family == "row_op":
        op = rng.choice(sorted(OPS))
        high = 9 if op == "x" else 30
        rows = []
        for _ in range(size):
            a, b = rng.randint(2, high), rng.randint(2, high)
            rows.append([a, b, OPS[op](a, b)])
        return rows
    if family == "shift":
        symbols = rng.sample(SYMBOLS, size)
        shift = rng.randint(1, size - 1)
        return [[symbols[(c + r * shift) % size] for c in range(size)] for r in range(size)]
    if family == "grid_ap":
        a, b, c, e = rng.randint(1, 15), rng.randint(-3, 6), rng.randint(-3, 6), rng.randint(-2, 2)
        return [[a + b * r + c * col + e * r * col for col in range(size)] for r in range(size)]
    if family == "latin":
        symbols = SYMBOLS[:size]
        return [[symbols[v - 1] for v in row] for row in random_latin_square(rng, size)]
    raise ValueError(f"symbolic_hard: unknown family {family!r}; choose from {FAMILIES}")


# ----- rule checks on a complete grid ------------------------------------------------------

def is_ap(line: list[int]) -> bool:
    return all(line[i + 1] - line[i] == line[1] - line[0] for i in range(len(line) - 1))


def obeys(family: str, grid: Grid) -> bool:
    """Whether the complete grid follows ``family`` for some choice of its hidden parameters."""
    n_rows, n_cols = len(grid), len(grid[0])
    columns = [[grid[r][c] for r in range(n_rows)] for c in range(n_cols)]
    if family == "row_ap":
        return all(is_ap(row) for row in grid)
    if family == "grid_ap":
        return all(is_ap(row) for row in grid) and all(is_ap(col) for col in columns)
    if family == "row_op":
        return any(all(op(row[0], row[1]) == row[2] for row in grid) for op in OPS.values())
    if family == "shift":
        return any(
            all(grid[r][c] == grid[0][(c + r * s) % n_cols] for r in range(n_rows) for c in range(n_cols)) for s in range(1, n_cols)
        )
    if family == "latin":
        symbols = set(grid[0])
        return len(symbols) == n_cols and all(set(row) == symbols for row in grid) and all(set(col) == symbols for col in columns)
    return False


# ----- exact deduction: the unique completion, or None --------------------------------------

def fill_ap_line(line: list) -> bool | None:
    """Complete an arithmetic progression in place from two known cells. Returns True when it
    filled something, False when nothing to do, None on a contradiction."""
    known = [(i, v) for i, v in enumerate(line) if v is not None]
    if len(known) < 2 or len(known) == len(line):
        return False
    (i, vi), (j, vj) = known[0], known[1]
    if (vj - vi) % (j - i):
        return None
    step = (vj - vi) // (j - i)
    full = [vi + step * (k - i) for k in range(len(line))]
    if any(full[k] != v for k, v in known):
        return None
    line[:] = full
    return True


def deduce_ap(grid: Grid, with_columns: bool) -> Grid | None:
    grid = [row[:] for row in grid]
    changed = True
    while changed:
        changed = False
        for row in grid:
            result = fill_ap_line(row)
            if result is None:
                return None
            changed |= result
        if with_columns:
            for c in range(len(grid[0])):
                col = [row[c] for row in grid]
                result = fill_ap_line(col)
                if result is None:
                    return None
                if result:
                    changed = True
                    for r, row in enumerate(grid):
                        row[c] = col[r]
    return None if any(v is None for row in grid for v in row) else grid


def solve_row_op(grid: Grid, symbol: str):
    """The completion under one operation: a grid, None (inconsistent) or AMBIGUOUS."""
    op = OPS[symbol]
    out = []
    for a, b, c in grid:
        missing = [a, b, c].count(None)
        if missing > 1:
            return AMBIGUOUS
        if c is None:
            c = op(a, b)
        elif a is None or b is None:
            other = b if a is None else a
            if symbol == "+":
                x = c - other
            elif symbol == "-":
                x = c + b if a is None else a - c
            else:
                if other == 0:
                    if c == 0:
                        return AMBIGUOUS
                    return None
                if c % other:
                    return None
                x = c // other
            a, b = (x, b) if a is None else (a, x)
        if op(a, b) != c:
            return None
        out.append([a, b, c])
    return out


def deduce_shift(grid: Grid) -> Grid | None:
    n_rows, n_cols = len(grid), len(grid[0])
    completions = []
    for s in range(1, n_cols):
        first: list = [None] * n_cols
        consistent = True
        for r in range(n_rows):
            for c in range(n_cols):
                v = grid[r][c]
                if v is None:
                    continue
                k = (c + r * s) % n_cols
                if first[k] is not None and first[k] != v:
                    consistent = False
                first[k] = v
        if not consistent:
            continue
        if None in first:
            return None  # some cell is free under this shift: not forced
        completions.append([[first[(c + r * s) % n_cols] for c in range(n_cols)] for r in range(n_rows)])
    unique = {tuple(map(tuple, g)) for g in completions}
    return completions[0] if len(unique) == 1 else None


def deduce_latin(grid: Grid, symbols: list[str]) -> Grid | None:
    grid = [row[:] for row in grid]
    holes = [(r, c) for r, row in enumerate(grid) for c, v in enumerate(row) if v is None]
    found: list[Grid] = []

    def search(k: int) -> None:
        if len(found) > 1:
            return
        if k == len(holes):
            found.append([row[:] for row in grid])
            return
        r, c = holes[k]
        for s in symbols:
            if s not in grid[r] and all(grid[i][c] != s for i in range(len(grid))):
                grid[r][c] = s
                search(k + 1)
                grid[r][c] = None

    search(0)
    return found[0] if len(found) == 1 else None


def deduce(family: str, grid: Grid, symbols: list[str]) -> Grid | None:
    """The one completion the family forces, or None when it is not forced (or impossible)."""
    if family in ("row_ap", "grid_ap"):
        return deduce_ap(grid, with_columns=family == "grid_ap")
    if family == "row_op":
        results = [solve_row_op(grid, symbol) for symbol in sorted(OPS)]
        if AMBIGUOUS in results:
            return None
        unique = {tuple(map(tuple, g)) for g in results if g is not None}
        return [list(row) for row in next(iter(unique))] if len(unique) == 1 else None
    if family == "shift":
        return deduce_shift(grid)
    return deduce_latin(grid, symbols)


# ----- the task ----------------------------------------------------------------------------

def parse_values(answer: str, count: int, symbolic: bool, symbols: list[str]) -> list | None:
    """``count`` space-separated values: symbols from ``symbols``, or integers of at most 6 digits."""
    if not isinstance(answer, str) or len(answer) > 16 * count + 16:
        return None
    tokens = answer.replace(",", " ").split()
    if len(tokens) != count:
        return None
    values = []
    for token in tokens:
        if symbolic:
            if token.upper() not in symbols:
                return None
            values.append(token.upper())
        else:
            digits = token[1:] if token.startswith("-") else token
            if not (digits.isascii() and digits.isdigit() and 1 <= len(digits) <= 6):
                return None
            values.append(int(token))
    return values


@register
class SymbolicHard(Task):
    name = "symbolic_hard"
    category = "Grid"
    presets = {
        "easy": {"size": 3, "missing": 1, "n_families": 3},
        "medium": {"size": 4, "missing": 2, "n_families": 5},
        "hard": {"size": 5, "missing": 4, "n_families": 5},
    }
    test_knobs = [{"size": 6, "missing": 6}, {"size": 3, "missing": 3, "n_families": 1}]

    def build(self, rng: random.Random, size: int, missing: int, n_families: int):
        if size < 3 or not 1 <= n_families <= len(FAMILIES):
            raise ValueError(f"symbolic_hard: need size >= 3 and 1 <= n_families <= {len(FAMILIES)}")
        family = rng.choice(FAMILIES[:n_families])
        for attempt in range(200):
            want = missing if attempt < 100 else 1
            grid = make_grid(rng, family, size)
            symbols = sorted({v for row in grid for v in row}) if family in ("shift", "latin") else []
            cells = [(r, c) for r in range(len(grid)) for c in range(len(grid[0]))]
            holes = sorted(rng.sample(cells, min(want, len(cells) - 1)))
            puzzle = [[None if (r, c) in holes else v for c, v in enumerate(row)] for r, row in enumerate(grid)]
            if deduce(family, puzzle, symbols) == grid:
                break
        else:  # pragma: no cover - one hidden cell is always forced for these families
            raise RuntimeError(f"symbolic_hard: no uniquely solvable {family} grid found")
        symbolic = family in ("shift", "latin")
        rule = RULE_TEXT[family].format(symbols=" ".join(symbols))
        shown = format_grid([[MISSING if v is None else v for v in row] for row in puzzle])
        kind = "symbols" if symbolic else "integers"
        question = (
            f"The grid below follows a hidden rule of this kind: {rule}. Some cells are replaced by {MISSING}; the "
            f"rule determines them uniquely.\n\n{shown}\n\n"
            f"Answer with the {len(holes)} missing {kind} in reading order (row by row from the top, left to right "
            "within a row), separated by single spaces."
        )
        answer = " ".join(str(grid[r][c]) for r, c in holes)
        metadata = {"family": family, "puzzle": puzzle, "holes": [list(h) for h in holes], "symbols": symbols}
        return question, answer, metadata

    def verify(self, answer: str, metadata: dict) -> bool:
        holes = metadata["holes"]
        symbolic = metadata["family"] in ("shift", "latin")
        values = parse_values(answer, len(holes), symbolic, metadata["symbols"])
        if values is None:
            return False
        grid = [row[:] for row in metadata["puzzle"]]
        for (r, c), v in zip(holes, values):
            grid[r][c] = v
        return obeys(metadata["family"], grid)

    def corruptions(self, puzzle, rng):
        gold = gold_body(puzzle).split()
        symbolic = puzzle.metadata["family"] in ("shift", "latin")
        wrong = gold[:]
        if symbolic:
            wrong[-1] = next(s for s in puzzle.metadata["symbols"] if s != gold[-1])
        else:
            wrong[-1] = str(int(gold[-1]) + rng.choice([-1, 1]))
        out = [" ".join(wrong), " ".join(gold[:-1]), " ".join(gold + gold[-1:]), "", "? " * len(gold)]
        if gold[::-1] != gold:
            out.append(" ".join(gold[::-1]))
        return out
