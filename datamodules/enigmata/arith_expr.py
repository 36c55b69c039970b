"""Bounded exact arithmetic on untrusted text: + - * / and parentheses over non-negative integers.

Model answers to game24 / countdown are expressions; they are never eval()'d. This module
tokenises with a linear scan, parses with a recursive-descent parser whose depth and size are
capped, and evaluates with :class:`fractions.Fraction`, so ``(8/3)*9`` is exactly 24 and
``1/0`` is an error. It also returns the multiset of integers the expression used, which the
verifiers compare with the numbers of the puzzle. There is no unary minus: every number in an
answer must be one of the puzzle's numbers.

It also holds the exact "can these numbers reach the target" solver used at generation time.
"""

from __future__ import annotations

from fractions import Fraction

#: Longest expression text accepted (a 7-number countdown answer is ~40 characters).
MAX_EXPRESSION_CHARS = 256
#: Deepest parenthesis nesting accepted (keeps the recursion far below Python's limit).
MAX_DEPTH = 32
#: Longest integer literal accepted (puzzle numbers have at most 4 digits).
MAX_DIGITS = 6

_OPERATOR_ALIASES = {"×": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-", "[": "(", "]": ")", "{": "(", "}": ")"}


class ExpressionError(ValueError):
    """The text is not a well-formed, bounded, finite arithmetic expression."""


def tokenize(text: str) -> list[str | int]:
    """Split ``text`` into integers and the one-character tokens ``+ - * / ( )``."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError("expression too long")
    tokens: list[str | int] = []
    i, n = 0, len(text)
    while i < n:
        ch = _OPERATOR_ALIASES.get(text[i], text[i])
        if ch.isspace():
            i += 1
        elif ch in "+-*/()":
            tokens.append(ch)
            i += 1
        elif "0" <= ch <= "9":
            j = i
            while j < n and "0" <= text[j] <= "9":
                j += 1
            if j - i > MAX_DIGITS:
                raise ExpressionError("number too long")
            tokens.append(int(text[i:j]))
            i = j
        else:
            raise ExpressionError(f"unexpected character {ch!r}")
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*; factor := INT | '(' expr ')'."""

    def __init__(self, tokens: list[str | int]):
        self.tokens = tokens
        self.pos = 0
        self.numbers: list[int] = []

    def peek(self) -> str | int | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.factor(depth)
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise ExpressionError("division by zero")
            else:
                value = value / rhs
        return value

    def factor(self, depth: int) -> Fraction:
        tok = self.peek()
        if isinstance(tok, int):
            self.pos += 1
            self.numbers.append(tok)
            return Fraction(tok)
        if tok == "(":
            if depth >= MAX_DEPTH:
                raise ExpressionError("parentheses nested too deeply")
            self.pos += 1
            value = self.expr(depth + 1)
            if self.peek() != ")":
                raise ExpressionError("missing ')'")
            self.pos += 1
            return value
        raise ExpressionError(f"expected a number or '(' but found {tok!r}")


def evaluate(text: str) -> tuple[Fraction, list[int]]:
    """Exact value of the expression ``text`` and the sorted list of integers it used.

    Raises :class:`ExpressionError` on anything malformed, over-long or dividing by zero.
    """
    if not isinstance(text, str):
        raise ExpressionError("expression must be text")
    tokens = tokenize(text)
    if not tokens:
        raise ExpressionError("empty expression")
    parser = _Parser(tokens)
    value = parser.expr(0)
    if parser.pos != len(tokens):
        raise ExpressionError(f"unexpected token {tokens[parser.pos]!r}")
    return value, sorted(parser.numbers)


def strip_claimed_result(text: str, target: int) -> str:
    """Drop a trailing ``= target`` the model may append (``(1+2)*8 = 24``); any other ``=`` stays
    in place and makes the expression invalid."""
    left, sep, right = text.partition("=")
    if sep and right.strip() == str(target):
        return left
    return text


def is_sub_multiset(used: list[int], available: list[int]) -> bool:
    """True when every number in ``used`` is available, counting repeats."""
    remaining: dict[int, int] = {}
    for x in available:
        remaining[x] = remaining.get(x, 0) + 1
    for x in used:
        if remaining.get(x, 0) == 0:
            return False
        remaining[x] -= 1
    return True


def _combine(a: Fraction, ea: str, b: Fraction, eb: str):
    """All values (with expressions) one binary operation makes of ``a`` and ``b``."""
    yield a + b, f"({ea} + {eb})"
    yield a * b, f"({ea} * {eb})"
    yield a - b, f"({ea} - {eb})"
    yield b - a, f"({eb} - {ea})"
    if b != 0:
        yield a / b, f"({ea} / {eb})"
    if a != 0:
        yield b / a, f"({eb} / {ea})"


def _partners(a: Fraction, ea: str, goal: Fraction):
    """For each operation, the value ``b`` must have so that ``a (op) b == goal`` (goal != 0),
    with a function building the (fully parenthesised) expression from b's expression."""
    yield goal - a, lambda eb: f"({ea} + {eb})"
    yield a - goal, lambda eb: f"({ea} - {eb})"
    yield goal + a, lambda eb: f"({eb} - {ea})"
    if a != 0:
        yield goal / a, lambda eb: f"({ea} * {eb})"
        yield a / goal, lambda eb: f"({ea} / {eb})"
        yield goal * a, lambda eb: f"({eb} / {ea})"


def _splits(mask: int):
    """Each split of ``mask`` into two non-empty disjoint halves, once per unordered pair."""
    sub = (mask - 1) & mask
    while sub:
        other = mask ^ sub
        if sub < other:
            yield sub, other
        sub = (sub - 1) & mask


class _Reach:
    """Exact search over every expression tree on a multiset of numbers.

    ``table(mask)`` maps every value the numbers in ``mask`` can make to one expression making
    it; tables exist only for masks of at most ``n - 2`` numbers, are built on first use and are
    shared between masks holding the same sub-multiset (repeated numbers are common). Bigger
    masks are never tabulated (that is where the cost explodes): :meth:`find` asks "can ``mask``
    make ``goal``" by splitting it and looking up, for each value of the tabulated half, the
    partner value the other half would need. Splits into small halves are tried first, so
    solvable instances usually finish before the big tables are built.
    """

    def __init__(self, numbers: list[int]):
        self.numbers = numbers
        self.n = len(numbers)
        self.tabulated_size = max(1, self.n - 2)
        self.tables: dict[tuple[int, ...], dict[Fraction, str]] = {}
        self.memo: dict[tuple[tuple[int, ...], Fraction], str | None] = {}

    def key(self, mask: int) -> tuple[int, ...]:
        return tuple(sorted(x for i, x in enumerate(self.numbers) if mask >> i & 1))

    def size(self, mask: int) -> int:
        return bin(mask).count("1")

    def table(self, mask: int) -> dict[Fraction, str]:
        key = self.key(mask)
        table = self.tables.get(key)
        if table is None:
            if len(key) == 1:
                table = {Fraction(key[0]): str(key[0])}
            else:
                table = {}
                for sub, other in _splits(mask):
                    right = self.table(other)
                    for a, ea in self.table(sub).items():
                        for b, eb in right.items():
                            for v, e in _combine(a, ea, b, eb):
                                if v not in table:
                                    table[v] = e
            self.tables[key] = table
        return table

    def find(self, mask: int, goal: Fraction) -> str | None:
        if self.size(mask) <= self.tabulated_size:
            return self.table(mask).get(goal)
        key = (self.key(mask), goal)
        if key in self.memo:
            return self.memo[key]
        found = None
        # balanced splits first: their tables are the small ones
        splits = sorted(_splits(mask), key=lambda s: max(self.size(s[0]), self.size(s[1])))
        for sub, other in splits:
            # iterate over a tabulated half (one always is: only masks of n-1 or n numbers are
            # not), the smaller one when both are
            small, large = (sub, other) if self.size(sub) <= self.size(other) else (other, sub)
            for a, ea in self.table(small).items():
                for b, build in _partners(a, ea, goal):
                    eb = self.find(large, b)
                    if eb is not None:
                        found = build(eb)
                        break
                if found is not None:
                    break
            if found is not None:
                break
        self.memo[key] = found
        return found


def solve_all_numbers(numbers: list[int], target: int) -> str | None:
    """An expression using every number exactly once whose exact value is ``target``, or None
    when no expression tree over + - * / does (exhaustive, exact Fraction arithmetic).

    ``target`` must be non-zero (puzzle targets are positive).
    """
    if target == 0:
        raise ValueError("solve_all_numbers needs a non-zero target")
    if not numbers:
        return None
    found = _Reach(list(numbers)).find((1 << len(numbers)) - 1, Fraction(target))
    if found is not None and found.startswith("("):
        found = found[1:-1]  # every built expression is wrapped in one outer pair
    return found
