"""Answer checkers: does the model's answer match the gold one? ``(answer, gold) -> float in [0, 1]``.

Pick the one that fits the task (``data.checker``); math equivalence treats letters as symbols
(``music`` and ``cisum`` are the same product of commuting symbols), so it is only for math.

* ``exact``: identical after stripping surrounding whitespace.
* ``normalized``: equal after Unicode NFKC, case folding, dropping punctuation and collapsing
  whitespace (``"New  York."`` == ``"new york"``).
* ``numeric``: both parse as numbers (``1,234``, ``-3.5``, ``1/4``, ``50%`` is 0.5) and agree within
  ``tolerance`` (relative, and absolute near zero).
* ``choice``: multiple choice: the first standalone option letter of the answer (``B``, ``(b)``,
  ``B) Paris``) equals the gold letter.
* ``regex``: the gold is a regular expression the whole answer must match (the pattern is the
  dataset's, not the model's; the answer is bounded in length).
* ``math``: equivalence via math-verify, with the size and time bounds of ``math_problems``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from fractions import Fraction
from functools import partial
from typing import Callable

from datamodules.math_problems import answers_equivalent, plain_number

Checker = Callable[[str, str], float]

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_CHOICE = re.compile(r"^\W*([A-Za-z])(?![A-Za-z])")
#: Answers longer than this are not checked by a regular expression at all (score 0).
MAX_REGEX_ANSWER = 2048


def exact(answer: str, gold: str) -> float:
    return float(answer.strip() == gold.strip())


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().translate(_PUNCTUATION)
    return " ".join(text.split())


def normalized(answer: str, gold: str) -> float:
    return float(normalize_text(answer) == normalize_text(gold))


def parse_number(text: str) -> Fraction | None:
    """An exact number from ``1,234`` / ``-3.5`` / ``1/4`` / ``2e3`` / ``50%``; None otherwise."""
    text = text.strip().rstrip(".")
    percent = text.endswith("%")
    text = text.rstrip("%").strip().lstrip("$")
    value = plain_number(text)
    if value is None and len(text) <= 64:
        try:
            value = Fraction(text)  # scientific notation, "+7", ".5"
        except (ValueError, ZeroDivisionError):
            return None
    return None if value is None else (value / 100 if percent else value)


def numeric(answer: str, gold: str, tolerance: float = 1e-6) -> float:
    a, g = parse_number(answer), parse_number(gold)
    if a is None or g is None:
        return 0.0
    return float(abs(a - g) <= tolerance * max(1.0, abs(float(g))))


def choice_letter(text: str) -> str | None:
    match = _CHOICE.match(text[:64])
    return match.group(1).upper() if match else None


def choice(answer: str, gold: str) -> float:
    letter = choice_letter(answer)
    return float(letter is not None and letter == choice_letter(gold))


def regex(answer: str, gold: str) -> float:
    if len(answer) > MAX_REGEX_ANSWER:
        return 0.0
    return float(re.fullmatch(gold, answer.strip()) is not None)


def math_equivalent(answer: str, gold: str) -> float:
    return float(answers_equivalent(gold, answer))


CHECKERS: dict[str, Checker] = {"exact": exact, "normalized": normalized, "numeric": numeric, "choice": choice,
                                "regex": regex, "math": math_equivalent}


def resolve_checker(name: str, tolerance: float = 1e-6) -> Checker:
    """A checker by name (``numeric`` with ``tolerance``); an unknown name suggests the closest."""
    if name not in CHECKERS:
        import difflib

        close = difflib.get_close_matches(name, CHECKERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown data.checker {name!r}: {hint}choose one of {sorted(CHECKERS)}")
    return partial(numeric, tolerance=tolerance) if name == "numeric" else CHECKERS[name]
