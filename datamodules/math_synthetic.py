"""The offline math corpus: seeded arithmetic and algebra word problems with exact answers.

Item ``i`` of seed ``s`` comes from ``random.Random(f"math/{s}/{i}")``, so it is identical on
every machine, process and rank, and the quickstart and tests need no download. Answers are exact
(``int`` or ``Fraction``) and written as ``12`` or ``-7/3``.

Difficulty:
  * ``easy``: one addition or subtraction of small numbers ("What is 7 + 5?"): short enough for
    a tiny character-level model to learn.
  * ``medium``: two-operation arithmetic, one-step word problems, ``ax + b = c`` with an integer x.
  * ``hard``: fraction arithmetic, sharing word problems with fractional answers, and
    ``ax + b = cx + d`` with a fractional x.
  * ``mixed``: each item picks one of the three.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Callable

DIFFICULTIES = ("easy", "medium", "hard", "mixed")

_NAMES = ("Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Ivy", "Jon", "Kim", "Leo", "Mia")
_ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cards", "shells", "coins")


def format_number(value: int | Fraction) -> str:
    """``12``, ``-3`` or ``7/3``: the canonical answer text of the corpus."""
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _easy(rng: random.Random) -> tuple[str, Fraction, str]:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    if rng.random() < 0.5:
        return f"What is {a} + {b}?", Fraction(a + b), "add"
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}?", Fraction(a - b), "subtract"


def _medium(rng: random.Random) -> tuple[str, Fraction, str]:
    kind = rng.choice(("two_ops", "word", "linear"))
    if kind == "two_ops":
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 50)
        if rng.random() < 0.5:
            return f"What is {a} * {b} + {c}?", Fraction(a * b + c), kind
        return f"What is {c} + {a} * {b} - {a}?", Fraction(c + a * b - a), kind
    if kind == "word":
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        have, groups, per = rng.randint(3, 40), rng.randint(2, 9), rng.randint(2, 12)
        question = f"{name} has {have} {item} and buys {groups} packs of {per} {item}. How many {item} does {name} have now?"
        return question, Fraction(have + groups * per), kind
    x, a = rng.randint(-10, 10), rng.choice([n for n in range(-9, 10) if n not in (0, 1)])
    b = rng.randint(-20, 20)
    sign = "+" if b >= 0 else "-"
    return f"Solve for x: {a}x {sign} {abs(b)} = {a * x + b}.", Fraction(x), kind


def _hard(rng: random.Random) -> tuple[str, Fraction, str]:
    kind = rng.choice(("fractions", "share", "linear"))
    if kind == "fractions":
        p, q = Fraction(rng.randint(1, 9), rng.randint(2, 9)), Fraction(rng.randint(1, 9), rng.randint(2, 9))
        op = rng.choice("+-*")
        value = {"+": p + q, "-": p - q, "*": p * q}[op]
        return f"What is {format_number(p)} {op} {format_number(q)}?", value, kind
    if kind == "share":
        name, item = rng.choice(_NAMES), rng.choice(("pizzas", "cakes", "pies"))
        total, eaten, friends = rng.randint(3, 20), rng.randint(0, 2), rng.randint(2, 9)
        question = (
            f"{name} bakes {total} {item}, eats {eaten} of them, and shares the rest equally among {friends} friends. "
            f"How many {item} does each friend get?"
        )
        return question, Fraction(total - eaten, friends), kind
    a, c = rng.sample([n for n in range(-9, 10) if n != 0], 2)
    b, d = rng.randint(-20, 20), rng.randint(-20, 20)
    return f"Solve for x: {a}x + {b} = {c}x + {d}.", Fraction(d - b, a - c), kind


_LEVELS: dict[str, Callable[[random.Random], tuple[str, Fraction, str]]] = {"easy": _easy, "medium": _medium, "hard": _hard}


def synthetic_item(seed: int, index: int, difficulty: str = "easy") -> tuple[str, str, dict]:
    """Item ``index`` of ``seed``: ``(question, gold answer text, metadata)``."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown synthetic difficulty {difficulty!r}: choose one of {list(DIFFICULTIES)}")
    rng = random.Random(f"math/{seed}/{index}")
    level = rng.choice(("easy", "medium", "hard")) if difficulty == "mixed" else difficulty
    question, value, kind = _LEVELS[level](rng)
    return question, format_number(value), {"source": "synthetic", "difficulty": level, "kind": kind, "seed": seed, "index": index}
