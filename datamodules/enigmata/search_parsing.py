"""Bounded parsers for the answer formats of the Graph and Search tasks.

Model output is untrusted: every parser first rejects over-long text, then scans it once with a
small state machine (no regular expressions, no recursion) and returns ``None`` on anything it
does not recognise. Callers turn ``None`` into a failed verification.
"""

from __future__ import annotations

from datamodules.enigmata.base import says_no_solution

#: Longest integer a coordinate or node label may have (keeps int() trivially bounded).
MAX_DIGITS = 4


def parse_coordinates(body: str, max_pairs: int) -> list[tuple[int, int]] | None:
    """Parse ``(r,c) (r,c) ...`` into a list of integer pairs.

    Pairs may be separated by whitespace, commas, semicolons or ``->``; anything else (letters,
    signs, nested brackets, more than ``max_pairs`` pairs) gives ``None``.
    """
    if not isinstance(body, str) or len(body) > max_pairs * 16 + 16:
        return None
    text = body.replace("->", " ")
    pairs: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while True:
        while i < n and (text[i].isspace() or text[i] in ",;"):
            i += 1
        if i == n:
            return pairs
        if text[i] != "(" or len(pairs) >= max_pairs:
            return None
        i += 1
        numbers = []
        for closer in (",", ")"):
            while i < n and text[i] == " ":
                i += 1
            start = i
            while i < n and text[i] in "0123456789":
                i += 1
            if not 0 < i - start <= MAX_DIGITS:
                return None
            numbers.append(int(text[start:i]))
            while i < n and text[i] == " ":
                i += 1
            if i == n or text[i] != closer:
                return None
            i += 1
        pairs.append((numbers[0], numbers[1]))


def format_coordinates(cells) -> str:
    """The inverse of :func:`parse_coordinates`: 0-based ``(row, col)`` cells as ``(r,c)`` 1-based, in order."""
    return " ".join(f"({r + 1},{c + 1})" for r, c in cells)


def parse_int_sequence(body: str, max_items: int) -> list[int] | None:
    """Parse non-negative integers separated by whitespace, commas or ``->`` (node sequences)."""
    if not isinstance(body, str) or len(body) > max_items * 8 + 8:
        return None
    tokens = body.replace("->", " ").replace(",", " ").split()
    if not tokens or len(tokens) > max_items:
        return None
    if any(not (tok.isascii() and tok.isdigit()) or len(tok) > MAX_DIGITS for tok in tokens):
        return None
    return [int(tok) for tok in tokens]


def parse_symbol_grid(body: str, rows: int, cols: int, alphabet: str) -> list[str] | None:
    """Parse ``rows`` lines of ``cols`` symbols from ``alphabet`` (spaces between symbols optional)."""
    if not isinstance(body, str) or len(body) > rows * (2 * cols + 2) + 16:
        return None
    lines = [line.replace(" ", "").replace("\t", "") for line in body.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) != rows:
        return None
    for line in lines:
        if len(line) != cols or any(ch not in alphabet for ch in line):
            return None
    return lines


def parse_word_sequence(body: str, vocabulary: frozenset[str], max_items: int) -> list[str] | None:
    """Parse upper-cased words from ``vocabulary`` separated by whitespace or commas."""
    if not isinstance(body, str) or len(body) > max_items * 12 + 8:
        return None
    tokens = body.replace(",", " ").upper().split()
    if len(tokens) > max_items or any(tok not in vocabulary for tok in tokens):
        return None
    return tokens


def is_no_solution(body: str) -> bool:
    """True when the body says the instance has no solution (the shared rule, see
    :func:`datamodules.enigmata.base.says_no_solution`)."""
    return says_no_solution(body)
