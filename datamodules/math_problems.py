"""Math problems: answer extraction and bounded equivalence scoring with math-verify.

A :class:`MathProblem` implements the Problem protocol. ``score(completion)`` reads the model's
answer (the last ``<answer>`` block, else the last ``\\boxed{}``, else for GSM8K-style problems the
number after the last ``####``) and compares it with the gold answer by mathematical equivalence
(math-verify: fractions, decimals, LaTeX, percentages, units, intervals, sets, matrices), not by
string match.

How the checker is bounded (math-verify 0.9's own timeouts use ``signal.alarm``: whole seconds,
main thread only, a ``ValueError`` in any other thread, and no help at all while CPython is inside
one C-level operation such as ``10**(10**10)``). So we call math-verify with its timeouts OFF and
bound it ourselves, in three layers:

1. Text caps before parsing (any thread): answer length, brace depth, digit-run length.
2. A size screen of the parsed SymPy tree before comparing (any thread, no signal): node count,
   an upper bound on the number of digits any number in it could have (power towers, huge
   factorials, unevaluated sums/integrals are refused), and an upper bound on the number of
   terms its polynomial expansion could have (``(x+y+z)^{200}``, ``(x+1)^{999}``: SymPy's
   simplification expands them for a minute or more). Layers 1-2 are the time bound everywhere:
   an answer they pass is checked in well under a second on a 2-core CPU (worst admitted shapes
   measured ~0.5 s), in any thread and with ``time_limit=None``.
3. A wall-clock deadline (``signal.setitimer``, sub-second) around parse + verify, an extra
   safety net installed only in the main thread and only when no other interval timer runs.

A refused or timed-out answer scores 0; nothing here raises on model output.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator

from lit_reason.tasks.answer import MAX_COMPLETION_CHARS, extract_answer, format_answer
from lit_reason.tasks.problem import safe_score

log = logging.getLogger(__name__)

#: Longest model answer body we try to parse (MATH's longest gold answers are ~150 chars).
MAX_MATH_ANSWER_CHARS = 320
#: Deepest ``{...}`` nesting we parse (a 200-deep ``\frac`` takes seconds inside the LaTeX parser).
MAX_BRACE_DEPTH = 10
#: Longest run of digits (longer numbers are not answers and cost quadratic int conversion).
MAX_DIGIT_RUN = 64
#: Most SymPy nodes in a parsed answer.
MAX_TREE_NODES = 400
#: A number with more digits than this is never materialised (refused before comparison).
MAX_RESULT_DIGITS = 2000
#: Most terms the full expansion of a parsed answer could have: ``(x+1)^{250}`` (251 terms) and
#: ``(x+y+z)^{20}`` (231) check in ~0.4-0.5 s; ``(x+y+z)^{40}`` (861) took 3 s and
#: ``(x+y+z)^{200}`` (20301) 80 s, so larger expansions are refused before SymPy sees them.
MAX_EXPANDED_TERMS = 256
#: Default wall-clock budget for parse + compare of one completion (main thread only).
DEFAULT_TIME_LIMIT = 2.0
#: How many trailing ``\boxed`` candidates we try before giving up (bounds the backward scan).
MAX_BOXED_CANDIDATES = 32

_BOX_COMMANDS = ("\\boxed", "\\fbox")


# --------------------------------------------------------------------------- extraction


def _balanced_group(text: str, open_at: int, limit: int) -> str | None:
    """Content of the ``{...}`` group opening at ``open_at`` (escaped ``\\{`` skipped), or None
    if it is not closed within ``limit`` characters."""
    depth, i, end = 0, open_at, min(len(text), open_at + limit + 2)
    while i < end:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    return None


def last_boxed(text: object, max_chars: int = 8192) -> str | None:
    """Body of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``) in text.

    Nested braces are balanced; an unclosed trailing box (a truncated completion) is skipped in
    favour of the previous complete one. Bounded: at most ``MAX_BOXED_CANDIDATES`` candidates,
    each scanned over at most ``max_chars`` characters.
    """
    if not isinstance(text, str) or len(text) > MAX_COMPLETION_CHARS:
        return None
    end = len(text)
    for _ in range(MAX_BOXED_CANDIDATES):
        start, command = max((text.rfind(c, 0, end), c) for c in _BOX_COMMANDS)
        if start < 0:
            return None
        after = start + len(command)
        rest = text[after : after + 1]
        if rest == "{":
            body = _balanced_group(text, after, max_chars)
            if body is not None:
                return body.strip()
        elif rest == " ":  # "\boxed 5": the argument is the next token
            token = text[after:].lstrip(" ").split(None, 1)
            if token:
                body = token[0].rstrip("$.,")
                if body:
                    return body[:max_chars]
        end = start
    return None


def gsm8k_gold(solution: object) -> str | None:
    """The gold of a GSM8K-style solution: the text after the last ``####`` (commas dropped)."""
    if not isinstance(solution, str):
        return None
    at = solution.rfind("####")
    if at < 0:
        return None
    tail = solution[at + 4 :].strip().split("\n", 1)[0].strip()
    return tail.replace(",", "") or None


def _strip_math_delimiters(body: str) -> str:
    body = body.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(body) >= len(left) + len(right) and body.startswith(left) and body.endswith(right):
            return body[len(left) : len(body) - len(right)].strip()
    return body


def extract_model_answer(completion: object, hash_marker: bool = False) -> str | None:
    """The model's final answer: last ``<answer>`` block (a ``\\boxed{}`` inside it wins), else
    the last ``\\boxed{}``, else (``hash_marker``) the text after the last ``####``. None: no answer."""
    if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
        return None
    body = extract_answer(completion)
    if body is not None:
        inner = last_boxed(body) if "\\boxed" in body or "\\fbox" in body else None
        body = inner if inner is not None else body
    if body is None:
        body = last_boxed(completion)
    if body is None and hash_marker:
        body = gsm8k_gold(completion)
    if body is None:
        return None
    body = _strip_math_delimiters(body)
    return body or None


# --------------------------------------------------------------------------- bounds


def text_is_checkable(body: str, max_chars: int = MAX_MATH_ANSWER_CHARS) -> bool:
    """Layer 1: cheap caps on the raw answer text (length, brace depth, digit runs)."""
    if not isinstance(body, str) or not body or len(body) > max_chars:
        return False
    depth = run = 0
    for ch in body:
        if ch == "{":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                return False
        elif ch == "}":
            depth -= 1
        if ch.isdigit():
            run += 1
            if run > MAX_DIGIT_RUN:
                return False
        else:
            run = 0
    return True


_INF = float("inf")
_LOG10_2 = math.log10(2)


class _TooBig(Exception):
    pass


def _digits_bound(expr: Any, budget: list[int]) -> float:
    """Upper bound on log10 |value| of any number ``expr`` could evaluate to (symbols count as 10).

    Raises ``_TooBig`` when the tree has too many nodes or holds an operation that can explode
    (a power tower, a factorial of a large number, an unevaluated sum / product / integral).
    """
    import sympy

    budget[0] -= 1
    if budget[0] < 0:
        raise _TooBig("too many nodes")
    if isinstance(expr, str):
        return 1.0
    if isinstance(expr, sympy.MatrixBase):
        if expr.rows * expr.cols > 64:
            raise _TooBig("matrix too large")
        return max((_digits_bound(x, budget) for x in expr), default=1.0)
    if isinstance(expr, sympy.Integer):
        return max(int(expr.p).bit_length() * _LOG10_2, 1.0)
    if isinstance(expr, sympy.Rational):
        return max(int(expr.p).bit_length(), int(expr.q).bit_length()) * _LOG10_2 + 1.0
    if isinstance(expr, sympy.Float):
        _, mantissa, exponent, bits = expr._mpf_ if len(expr._mpf_) == 4 else (0, 0, 0, 0)
        return abs(exponent + bits) * _LOG10_2 + 1.0
    if isinstance(expr, (sympy.Sum, sympy.Product, sympy.Integral, sympy.Limit, sympy.Derivative)):
        raise _TooBig(type(expr).__name__)
    if not getattr(expr, "args", ()):
        return 1.0  # symbols, pi, E, I, oo, ...
    if isinstance(expr, sympy.Pow):
        base, exponent = expr.args
        base_digits = _digits_bound(base, budget)
        exp_digits = _digits_bound(exponent, budget)
        if exp_digits > 4:  # |exponent| could exceed 10**4
            raise _TooBig("exponent too large")
        return base_digits * 10.0**exp_digits
    if isinstance(expr, (sympy.factorial, sympy.factorial2, sympy.gamma, sympy.subfactorial, sympy.binomial)):
        n_digits = max(_digits_bound(a, budget) for a in expr.args)
        if n_digits > 3.5:  # argument could exceed ~3000
            raise _TooBig("factorial of a large number")
        return 10.0**n_digits * n_digits
    children = [_digits_bound(a, budget) for a in expr.args]
    if isinstance(expr, sympy.Mul):
        return sum(children)
    return max(children) + math.log10(len(children) + 1)


def _expanded_terms(expr: Any, cap: float) -> float:
    """Upper bound on the number of terms of ``expr`` fully expanded (capped at ``cap``, so the
    arithmetic stays small): a sum adds its parts' counts, a product multiplies them, and
    ``p^e`` for a positive or negative integer ``e`` and ``p`` with ``t`` terms has at most
    ``C(|e| + t - 1, t - 1)`` monomials; a symbolic or fractional power of it is not expanded
    (its base's count); anything else counts the sum of its arguments' counts."""
    import sympy

    if isinstance(expr, sympy.MatrixBase):
        return sum(_expanded_terms(x, cap) for x in expr)
    args = getattr(expr, "args", ())
    if isinstance(expr, str) or not args:
        return 1.0
    if isinstance(expr, sympy.Pow):
        base, exponent = args
        terms = _expanded_terms(base, cap)
        if terms <= 1 or not isinstance(exponent, sympy.Integer):
            return terms
        e = abs(int(exponent.p))
        if e > cap:  # only reached for multi-term bases
            return cap + 1
        return float(min(math.comb(e + int(terms) - 1, int(terms) - 1), cap + 1))
    counts = [_expanded_terms(a, cap) for a in args]
    if isinstance(expr, sympy.Mul):
        return min(math.prod(counts), cap + 1)
    if isinstance(expr, sympy.Add):
        return min(sum(counts), cap + 1)
    return min(sum(counts), cap + 1)  # a function's arguments, a relation's sides, a set's items


def tree_is_checkable(parsed: list, max_digits: float = MAX_RESULT_DIGITS, max_terms: int = MAX_EXPANDED_TERMS) -> bool:
    """Layer 2: refuse parsed answers that could materialise huge numbers, are too large, or
    would expand into more than ``max_terms`` terms."""
    budget = [MAX_TREE_NODES]
    try:
        if not all(_digits_bound(item, budget) <= max_digits for item in parsed):
            return False
        return all(_expanded_terms(item, max_terms) <= max_terms for item in parsed)
    except (_TooBig, RecursionError):
        return False
    except Exception:  # noqa: BLE001 - an unexpected SymPy shape is not worth the risk
        return False


class _Deadline(BaseException):
    """Raised from the alarm handler; a BaseException so library ``except Exception`` blocks
    cannot swallow it and keep computing past the deadline."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[bool]:
    """Layer 3: raise ``_Deadline`` after ``seconds`` of wall clock, where that is possible.

    Yields whether the deadline is armed: only in the main thread, on platforms with
    ``setitimer``, and when no other interval timer (e.g. a test timeout) is already running.
    """
    armed = (
        bool(seconds)
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
    )
    if not armed:
        yield False
        return

    def on_alarm(signum, frame):
        raise _Deadline()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield True
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- equivalence


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeout is off; here that is deliberate (see module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


_math_verify = None


def _mv():
    """Import math-verify lazily, silence its one warning, and warm it up.

    The first symbolic comparison in a process pays ~1-2 s of lazy imports inside SymPy and the
    LaTeX parser; doing one untimed comparison here keeps that cost out of the first completion's
    time budget (which would otherwise score a correct answer 0).
    """
    global _math_verify
    if _math_verify is None:
        import math_verify

        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
        warm = lambda s: math_verify.parse("\\boxed{" + s + "}", parsing_timeout=None)  # noqa: E731
        math_verify.verify(warm("x^2+2x+1"), warm("(x+1)^2"), timeout_seconds=None)
        math_verify.verify(warm("(1,2]"), warm("\\frac{1}{2}"), timeout_seconds=None)
        _math_verify = math_verify
    return _math_verify


def parse_answer(body: str) -> list:
    """math-verify's parse of one answer body (wrapped in ``\\boxed{}`` so LaTeX extraction runs
    on exactly this text); [] when nothing parses. Unbounded: callers apply the layers."""
    mv = _mv()
    return mv.parse("\\boxed{" + body + "}", parsing_timeout=None)


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_RATIO = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")


def plain_number(text: str) -> Fraction | None:
    """Exact value of a plain integer / decimal / ``a/b`` / ``1,234`` string, else None."""
    text = text.strip()
    if len(text) > MAX_DIGIT_RUN + 16:
        return None
    if _NUMBER.fullmatch(text):
        return Fraction(text.replace(",", ""))
    match = _RATIO.fullmatch(text)
    if match and int(match.group(2)) != 0:
        return Fraction(int(match.group(1)), int(match.group(2)))
    return None


def _normalise_text(text: str) -> str:
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "$", " "):
        text = text.replace(token, "")
    return text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


def answers_equivalent(gold: str, pred: str, time_limit_s: float | None = DEFAULT_TIME_LIMIT, gold_parsed: list | None = None) -> bool:
    """True iff ``pred`` is mathematically equivalent to ``gold``; False on anything refused,
    unparseable or over the time limit. Never raises on model text."""
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    if not text_is_checkable(pred, max(MAX_MATH_ANSWER_CHARS, len(gold) + 64)):
        return False
    exact_gold, exact_pred = plain_number(gold), plain_number(pred)
    if exact_gold is not None and exact_pred is not None and exact_gold == exact_pred:
        return True  # fast path: equal plain numbers need no SymPy (math-verify agrees)
    if _normalise_text(gold) == _normalise_text(pred):
        return True
    mv = _mv()  # import + warm-up happen outside the deadline
    try:
        with time_limit(time_limit_s):
            golds = gold_parsed if gold_parsed is not None else parse_answer(gold)
            if not golds:
                return False  # gold unparseable: only the normalised string match above counts
            preds = parse_answer(pred)
            if not preds or not tree_is_checkable(preds):
                return False
            return bool(mv.verify(golds, preds, timeout_seconds=None))
    except _Deadline:
        log.debug("math answer check timed out after %ss", time_limit_s)
        return False
    except Exception as err:  # noqa: BLE001 - model output must never crash training
        log.debug("math answer check failed: %s: %s", type(err).__name__, err)
        return False


# --------------------------------------------------------------------------- the problem


@dataclass
class MathProblem:
    """One math item: a Problem scored by equivalence with ``gold``.

    Args:
        prompt: plain text or chat messages shown to the policy.
        gold: the gold answer (e.g. ``"\\frac{1}{2}"``, ``"72"``).
        answer: a complete correct completion in the project's answer-tag convention
            (default ``<answer>{gold}</answer>``), so ``score(answer) == 1.0``.
        metadata: source, level, subject, index ... (level/subject feed grouped metrics).
        hash_marker: also accept a final ``#### N`` as the answer (GSM8K-style corpora).
        time_limit: extra wall-clock budget per completion, seconds (main thread only; the size
            screens bound the work in every thread, see module doc).
    """

    prompt: Any
    gold: str
    answer: str = ""
    metadata: dict = field(default_factory=dict)
    hash_marker: bool = False
    time_limit: float | None = DEFAULT_TIME_LIMIT
    _gold_parsed: list | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.gold = str(self.gold).strip()
        if not self.answer:
            self.answer = format_answer(self.gold)

    def extract(self, completion: str) -> str | None:
        """The model answer this problem would score (None: no answer found)."""
        return extract_model_answer(completion, hash_marker=self.hash_marker)

    def score(self, completion: str) -> float:
        return safe_score(self._score, completion)

    def _score(self, completion: str) -> float:
        pred = self.extract(completion)
        if pred is None:
            return 0.0
        if self._gold_parsed is None and plain_number(self.gold) is None:
            _mv()  # import + warm-up happen outside the deadline
            try:
                with time_limit(self.time_limit):
                    self._gold_parsed = parse_answer(self.gold)
            except _Deadline:
                self._gold_parsed = []
        return 1.0 if answers_equivalent(self.gold, pred, self.time_limit, self._gold_parsed) else 0.0
