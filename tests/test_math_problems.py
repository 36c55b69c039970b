"""Math answer extraction, equivalence scoring (math-verify) and its bounds."""

from __future__ import annotations

import threading
import time

import pytest

from datamodules.math_problems import (
    MathProblem,
    answers_equivalent,
    extract_model_answer,
    gsm8k_gold,
    last_boxed,
    plain_number,
    text_is_checkable,
    time_limit,
)
from fractions import Fraction

# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{\\frac{\\sqrt{3}}{\\left(2+x^{2}\\right)}}", "\\frac{\\sqrt{3}}{\\left(2+x^{2}\\right)}"),
        ("first \\boxed{1} then \\boxed{2} finally \\boxed{3}", "3"),  # several -> last
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are not structure
        ("\\fbox{7}", "7"),
        ("the answer is \\boxed 5.", "5"),
        ("\\boxed{7} and then a truncated \\boxed{8", "7"),  # unclosed last box: previous complete one
        ("no box here", None),
        ("\\boxed{", None),
        (None, None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_gsm8k_gold():
    assert gsm8k_gold("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert gsm8k_gold("... #### 1,234\n") == "1234"
    assert gsm8k_gold("no marker") is None


@pytest.mark.parametrize(
    "completion, hash_marker, expected",
    [
        ("reasoning <answer>12</answer>", False, "12"),
        ("<answer>1</answer> changed my mind <answer>2</answer>", False, "2"),  # last block
        ("<answer>so \\boxed{5}</answer>", False, "5"),  # a box inside the tag wins
        ("<answer>$\\frac{3}{4}$</answer>", False, "\\frac{3}{4}"),  # math delimiters dropped
        ("we get \\boxed{-3}", False, "-3"),  # no tag: last box
        ("... so #### 18", True, "18"),  # GSM8K style only when enabled
        ("... so #### 18", False, None),
        ("I do not know", True, None),
        ("<answer></answer>", False, None),
        ("x" * 70_000 + "<answer>1</answer>", False, None),  # over-long completion
    ],
)
def test_extract_model_answer(completion, hash_marker, expected):
    assert extract_model_answer(completion, hash_marker) == expected


def test_plain_number_fast_path_values():
    assert plain_number("1,234") == 1234
    assert plain_number("-7/3") == Fraction(-7, 3)
    assert plain_number("3.50") == Fraction(7, 2)
    assert plain_number("12,34") is None  # not a thousands pattern
    assert plain_number("1/0") is None
    assert plain_number("x") is None


# ----------------------------------------------------------------------------- equivalence

EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\frac{1}{2}"),
    ("\\frac{1}{2}", "\\dfrac{1}{2}"),
    ("\\frac{1}{2}", "1/2"),
    ("3", "3.0"),
    ("(1, 2]", "(1,2]"),
    ("[2, \\infty)", "[2,\\infty)"),
    ("10", "10\\%"),  # math-verify reads a bare percent as its number
    ("0.1", "10\\%"),
    ("5", "5 cm"),  # trailing units are dropped
    ("5", "5\\text{ cm}"),
    ("18", "\\$18.00"),
    ("1234", "1,234"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("x^2+2x+1", "(x+1)^2"),
    ("3", "x = 3"),
    ("2, -1", "-1, 2"),  # unordered solution sets
    ("\\text{(C)}", "C"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
]

NEAR_MISSES = [
    ("\\frac{1}{2}", "0.51"),
    ("3", "4"),
    ("-3", "3"),
    ("1/3", "0.333"),  # rounded to 6 places only
    ("(1, 2]", "(1, 2)"),
    ("(1, 2)", "(1, 3)"),
    ("x^2+2x+1", "(x-1)^2"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}"),
    ("\\text{Monday}", "\\text{Tuesday}"),
    ("72", "720"),
]


@pytest.mark.parametrize("gold, pred", EQUIVALENT)
def test_equivalent_answers_score_one(gold, pred):
    problem = MathProblem("q", gold)
    assert problem.score(f"work... <answer>{pred}</answer>") == 1.0
    assert problem.score(f"work... \\boxed{{{pred}}}") == 1.0
    assert problem.score(problem.answer) == 1.0


@pytest.mark.parametrize("gold, pred", NEAR_MISSES)
def test_near_misses_score_zero(gold, pred):
    assert MathProblem("q", gold).score(f"<answer>{pred}</answer>") == 0.0


def test_gsm8k_style_problem_accepts_hash_marker_and_tags():
    problem = MathProblem("q", "72", hash_marker=True)
    assert problem.answer == "<answer>72</answer>"
    assert problem.score("48 + 24 = 72\n#### 72") == 1.0
    assert problem.score("<answer>72</answer>") == 1.0
    assert problem.score("#### 71") == 0.0
    assert MathProblem("q", "72").score("#### 72") == 0.0  # MATH-style problems ignore ####


@pytest.mark.parametrize("garbage", ["", "no answer", "<answer>", "\\boxed{", None, 12, "<answer>\\frac{</answer>", "<answer>}}}{{{</answer>"])
def test_garbage_scores_zero_without_raising(garbage):
    assert MathProblem("q", "1/2").score(garbage) == 0.0


# ----------------------------------------------------------------------------- bounds

PATHOLOGICAL = [
    "9^{9^{9^{9}}}",  # tower: would materialise a number with ~10^8 digits
    "9^9^9^9",
    "10^{10^{10}}",
    "2^{" + "9" * 60 + "}",
    "1000000!",
    "(10^{100})!",
    "\\sum_{i=1}^{10^{9}} i",
    "\\frac{" * 40 + "1" + "}{2}" * 40,  # deep nesting
    "9" * 100_000,  # 100k digits
    "1+" * 5000 + "1",  # over-long answer
]


@pytest.mark.parametrize("body", PATHOLOGICAL)
def test_pathological_answers_score_zero_fast(body):
    problem = MathProblem("q", "3")
    problem.score("<answer>1</answer>")  # import + warm-up outside the timed call
    start = time.thread_time()  # CPU time: the bound is on the work, not on the machine's load
    assert problem.score(f"<answer>{body}</answer>") == 0.0
    assert problem.score(f"\\boxed{{{body}}}") == 0.0
    assert time.thread_time() - start < 2.0


def test_bounds_hold_in_a_worker_thread():
    """No alarm outside the main thread: the text and tree screens alone bound the work."""
    results: list[tuple[float, float]] = []

    def worker():
        for body in PATHOLOGICAL[:7] + ["1/2"]:
            start = time.thread_time()
            results.append((MathProblem("q", "\\frac{1}{2}").score(f"<answer>{body}</answer>"), time.thread_time() - start))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert [s for s, _ in results] == [0.0] * 7 + [1.0]  # the correct one still scores in a thread
    assert max(t for _, t in results) < 2.0


def test_text_screen_caps():
    assert text_is_checkable("\\frac{1}{2}")
    assert not text_is_checkable("")
    assert not text_is_checkable("{" * 11 + "}" * 11)
    assert not text_is_checkable("1" * 65)
    assert text_is_checkable("1" * 64)


def test_time_limit_interrupts_slow_python_in_main_thread():
    def spin():
        while True:
            pass

    start = time.perf_counter()
    with pytest.raises(BaseException) as info:
        with time_limit(0.2) as armed:
            assert armed
            spin()
    assert type(info.value).__name__ == "_Deadline"
    assert time.perf_counter() - start < 1.5


def test_time_limit_is_not_armed_off_main_thread():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(time_limit(0.2).__enter__()))
    thread.start()
    thread.join()
    assert seen == [False]


def test_equivalence_never_raises_on_odd_types():
    assert answers_equivalent("1", None) is False
    assert answers_equivalent(None, "1") is False


# Polynomial blow-ups: small numbers, a small tree, but SymPy's simplification expands them
# (``(x+y+z)^{200}`` took 80 s with no alarm). The expansion screen refuses them in any thread.
EXPANSIONS = ["(x+y+z)^{200}", "(x+1)^{999}", "(x+1)^{-999}", "(x+1)^{200}(y+2)^{200}", "\\sqrt{(x+y)^{900}}", "\\{(x+1)^{300}, 1\\}"]


def test_expansion_bound_counts_terms_by_hand():
    from sympy import Rational, Symbol, sqrt

    from datamodules.math_problems import _expanded_terms

    x, y, z = Symbol("x"), Symbol("y"), Symbol("z")
    assert _expanded_terms((x + 1) ** 2, 10**6) == 3  # x^2 + 2x + 1
    assert _expanded_terms((x + y + z) ** 2, 10**6) == 6  # C(4, 2)
    assert _expanded_terms((x + y + z) ** 200, 10**6) == 20301  # C(202, 2)
    assert _expanded_terms((x + 1) ** 3 * (y + 1) ** 2, 10**6) == 12  # 4 * 3
    assert _expanded_terms((x + 1) ** Rational(1, 2), 10**6) == 2  # a root is not expanded
    assert _expanded_terms(sqrt(x) + x ** 999, 10**6) == 2
    assert _expanded_terms((x + 1) ** 999, 100) == 101  # capped: the arithmetic stays small


@pytest.mark.parametrize("time_limit", [None, 2.0])
def test_expansion_blowups_score_zero_fast_without_alarm(time_limit):
    """With ``time_limit=None`` (no alarm at all) and in a worker thread (where none can be
    armed), blow-ups score 0 fast and ordinary correct answers, expanded or not, still score 1."""
    cases = [(b, 0.0) for b in EXPANSIONS] + [("(x+1)^2", 1.0), ("(x+1)(x+1)", 1.0), ("x^2 + 2x + 1", 1.0), ("(x-1)^2", 0.0)]
    results: list[tuple[float, float]] = []

    def worker():
        problem = MathProblem("q", "x^2+2x+1", time_limit=time_limit)
        problem.score("<answer>1</answer>")  # import + warm-up outside the timed calls
        for body, _ in cases:  # CPU time of this thread: the bound is on the work, not on the machine's load
            start = time.thread_time()
            results.append((problem.score(f"<answer>{body}</answer>"), time.thread_time() - start))

    worker_thread = threading.Thread(target=worker, daemon=True)
    worker_thread.start()
    worker_thread.join(timeout=60)
    assert not worker_thread.is_alive()
    assert [s for s, _ in results] == [want for _, want in cases]
    assert max(t for _, t in results) < 1.5
    start = time.thread_time()  # and in the main thread with no alarm
    assert all(answers_equivalent("3", body, None) is False for body in EXPANSIONS)
    assert time.thread_time() - start < 1.5
