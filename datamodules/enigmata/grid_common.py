"""Shared helpers of the Grid tasks: the one grid answer format and its strict, bounded parser.

Every grid answer is written the same way: one grid row per line, cells separated by single
spaces. Parsing tolerates surrounding whitespace and blank lines, and nothing else: the number of
rows and columns must match exactly and every cell must be one of the allowed tokens.
"""

from __future__ import annotations

from typing import Iterable

GRID_FORMAT = "one grid row per line, cells separated by single spaces"


def format_grid(rows: Iterable[Iterable[object]]) -> str:
    """Render a grid in the shared answer format."""
    return "\n".join(" ".join(str(cell) for cell in row) for row in rows)


def format_puzzle(puzzle: Iterable[Iterable[int]], empty: int = 0, blank: str = "_") -> str:
    """Render a puzzle grid whose cells equal to ``empty`` are unknown, shown as ``blank``."""
    return format_grid([[blank if v == empty else v for v in row] for row in puzzle])


def parse_grid(body: str, n_rows: int, n_cols: int, allowed: Iterable[str], max_token_len: int = 3) -> list[list[str]] | None:
    """Return the grid of tokens, or None when ``body`` is not an ``n_rows`` x ``n_cols`` grid of
    ``allowed`` tokens. The size check comes first, so a huge body costs nothing."""
    if not isinstance(body, str):
        return None
    allowed = set(allowed)
    if len(body) > n_rows * n_cols * (max_token_len + 3) + 64:
        return None
    lines = [line.split() for line in body.strip().splitlines()]
    lines = [tokens for tokens in lines if tokens]
    if len(lines) != n_rows:
        return None
    for tokens in lines:
        if len(tokens) != n_cols or any(token not in allowed for token in tokens):
            return None
    return lines


def parse_int_grid(body: str, n: int, low: int, high: int) -> list[list[int]] | None:
    """An ``n`` x ``n`` grid of integers in ``low..high`` (inclusive), or None."""
    allowed = [str(v) for v in range(low, high + 1)]
    tokens = parse_grid(body, n, n, allowed, max_token_len=max(len(a) for a in allowed))
    if tokens is None:
        return None
    return [[int(t) for t in row] for row in tokens]


def neighbours8(r: int, c: int, n_rows: int, n_cols: int):
    """The up to eight cells touching (r, c), diagonals included."""
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if (dr or dc) and 0 <= r + dr < n_rows and 0 <= c + dc < n_cols:
                yield r + dr, c + dc


def neighbours4(r: int, c: int, n_rows: int, n_cols: int):
    """The up to four cells sharing an edge with (r, c)."""
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        if 0 <= r + dr < n_rows and 0 <= c + dc < n_cols:
            yield r + dr, c + dc


def replace_cell(body: str, r: int, c: int, token: str) -> str:
    """A copy of a formatted grid body with cell (r, c) replaced (used to build corruptions)."""
    rows = [line.split() for line in body.splitlines()]
    rows[r][c] = token
    return format_grid(rows)


def random_latin_square(rng, n: int) -> list[list[int]]:
    """A random n x n latin square over 1..n by randomised cell-by-cell backtracking (fast for
    n <= 9); a step cap falls back to a cyclic square with shuffled rows, columns and symbols,
    so the time stays bounded."""
    grid = [[0] * n for _ in range(n)]
    rows_used = [set() for _ in range(n)]
    cols_used = [set() for _ in range(n)]
    steps = [0]

    def fill(pos: int) -> bool:
        if pos == n * n:
            return True
        steps[0] += 1
        if steps[0] > 20_000:
            return False
        r, c = divmod(pos, n)
        values = [v for v in range(1, n + 1) if v not in rows_used[r] and v not in cols_used[c]]
        rng.shuffle(values)
        for v in values:
            grid[r][c] = v
            rows_used[r].add(v)
            cols_used[c].add(v)
            if fill(pos + 1):
                return True
            rows_used[r].discard(v)
            cols_used[c].discard(v)
        grid[r][c] = 0
        return False

    if fill(0):
        return grid
    symbols = list(range(1, n + 1))
    rng.shuffle(symbols)
    row_order = list(range(n))
    col_order = list(range(n))
    rng.shuffle(row_order)
    rng.shuffle(col_order)
    return [[symbols[(row_order[r] + col_order[c]) % n] for c in range(n)] for r in range(n)]


def is_latin(grid: list[list[int]], n: int) -> bool:
    """Every row and every column of ``grid`` is a permutation of 1..n."""
    full = set(range(1, n + 1))
    return all(set(row) == full for row in grid) and all({grid[r][c] for r in range(n)} == full for c in range(n))


def grid_corruptions(body: str, rng, alphabet: list[str]) -> list[str]:
    """Wrong versions of a correct grid answer that every grid verifier must reject: one cell
    changed to another allowed token, a missing row, a missing column, an extra row, a
    truncated body and an empty one. (In every grid task of this module a single changed cell
    breaks a rule: a count, a permutation, a sum or an anagram.)"""
    rows = [line.split() for line in body.splitlines()]
    r = rng.randrange(len(rows))
    c = rng.randrange(len(rows[r]))
    others = [token for token in alphabet if token != rows[r][c]]
    wrong_cell = replace_cell(body, r, c, rng.choice(others))
    return [
        wrong_cell,
        format_grid(rows[:-1]),
        format_grid(row[:-1] for row in rows),
        format_grid(rows + [rows[0]]),
        body[: len(body) // 2],
        "",
    ]


def gold_body(puzzle) -> str:
    """The answer body of a generated puzzle's gold completion."""
    from lit_reason.tasks.answer import extract_answer

    return extract_answer(puzzle.answer) or ""
