"""Answer checkers, each on cases worked by hand; math equivalence only where the task is math."""

import pytest

from datamodules.answer_checkers import CHECKERS, parse_number, resolve_checker
from datamodules.custom import RowProblem
from datamodules.math_problems import MathProblem


def test_music_is_not_cisum_for_any_string_checker_but_math_says_equal():
    # math-verify reads letters as commuting symbols: m*u*s*i*c == c*i*s*u*m. That is why a
    # string task must not be routed through the math checker.
    for name in ("exact", "normalized", "choice", "regex"):
        assert CHECKERS[name]("music", "cisum") == 0.0, name
    assert CHECKERS["numeric"]("music", "cisum") == 0.0
    assert CHECKERS["math"]("music", "cisum") == 1.0  # the trap, documented
    problem = RowProblem(prompt="Reverse 'music'", gold="cisum", checker=resolve_checker("exact"))
    assert problem.score("<answer>music</answer>") == 0.0
    assert problem.score("<answer>cisum</answer>") == 1.0


def test_exact_and_normalized():
    assert CHECKERS["exact"](" Paris ", "Paris") == 1.0
    assert CHECKERS["exact"]("paris", "Paris") == 0.0
    assert CHECKERS["normalized"]("new  York.", "New York") == 1.0
    assert CHECKERS["normalized"]("Ｐａｒｉｓ", "paris") == 1.0  # NFKC full-width letters
    assert CHECKERS["normalized"]("New Yorker", "New York") == 0.0


def test_numeric_with_tolerance():
    assert parse_number("1,234") == 1234 and parse_number("50%") == pytest.approx(0.5) and parse_number("1/4") == 0.25
    assert parse_number("2e3") == 2000 and parse_number("$12.50") == 12.5 and parse_number("twelve") is None
    assert CHECKERS["numeric"]("0.3333", "1/3") == 0.0  # off by 3.3e-5 > the default 1e-6
    assert CHECKERS["numeric"]("0.3333333", "1/3") == 1.0  # off by 3.3e-8
    assert resolve_checker("numeric", tolerance=1e-3)("0.3333", "1/3") == 1.0
    assert resolve_checker("numeric", tolerance=0.01)("101", "100") == 1.0
    assert resolve_checker("numeric", tolerance=0.01)("102", "100") == 0.0


def test_choice_and_regex():
    choice = CHECKERS["choice"]
    assert choice("B", "B") == choice("(b)", "B") == choice("B) Paris", "B") == 1.0
    assert choice("C", "B") == 0.0 and choice("Because", "B") == 0.0
    regex = CHECKERS["regex"]
    assert regex("colour", "colou?r") == regex("color", "colou?r") == 1.0
    assert regex("colours", "colou?r") == 0.0  # the whole answer must match
    assert regex("a" * 5000, "a+") == 0.0  # over-long answers are not matched at all


def test_math_checker_and_unknown_name():
    assert CHECKERS["math"]("\\frac{1}{2}", "0.5") == 1.0
    assert MathProblem(prompt="q", gold="1/2").score("<answer>0.5</answer>") == 1.0
    with pytest.raises(ValueError, match="did you mean 'numeric'"):
        resolve_checker("numerc")
