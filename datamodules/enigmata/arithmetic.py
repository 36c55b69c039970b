"""Enigmata Arithmetic tasks: ``game24`` and ``countdown``.

Answers are arithmetic expressions, parsed and evaluated exactly by
:mod:`datamodules.enigmata.arith_expr` (never eval()'d). Any expression obeying the rules scores 1.
"""

from __future__ import annotations

import random

from datamodules.enigmata.arith_expr import (
    ExpressionError,
    evaluate,
    is_sub_multiset,
    solve_all_numbers,
    strip_claimed_result,
)
from datamodules.enigmata.base import NO_SOLUTION, Task, register, says_no_solution

GAME24_TARGET = 24


def _expression_value(body: str, target: int):
    """(value, sorted numbers used) of an answer expression, or None if it does not parse."""
    try:
        return evaluate(strip_claimed_result(body, target))
    except ExpressionError:
        return None


def expression_feedback(body: str, metadata: dict, every_number: bool, max_chars: int) -> str | None:
    """Why an arithmetic answer is wrong: it does not parse, its numbers are not the puzzle's, or
    its value misses the target (None when none of these: e.g. a wrong "no solution")."""
    target, numbers = metadata["target"], sorted(metadata["numbers"])
    if len(body) > max_chars:
        return f"The answer is longer than {max_chars} characters."
    if says_no_solution(body):
        return "This puzzle has a solution." if metadata.get("solvable", True) else None
    parsed = _expression_value(body, target)
    if parsed is None:
        return "The answer is not an arithmetic expression of the given numbers with + - * / and parentheses."
    value, used = parsed
    if (used != numbers) if every_number else not is_sub_multiset(used, numbers):
        need = "every given number exactly once" if every_number else "each given number at most once"
        return f"The expression uses {used} but must use {need}: {numbers}."
    if value != target:
        shown = str(value) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
        return f"The expression evaluates to {shown}, not {target}."
    return None


def _sample_game24_numbers(rng: random.Random, count: int, max_number: int, few_distinct: bool) -> list[int]:
    """Uniform numbers in 1..max_number, or (few_distinct) numbers drawn from only 1-3 values:
    the region where unsolvable sets live once there are 5 or more numbers."""
    if not few_distinct:
        return [rng.randint(1, max_number) for _ in range(count)]
    values = [rng.randint(1, max_number) for _ in range(rng.randint(1, 2 if count >= 6 else 3))]
    return [rng.choice(values) for _ in range(count)]


@register
class Game24(Task):
    """Use every given number exactly once with + - * / and parentheses to make 24.

    Whether an instance is solvable is decided at generation by the exhaustive exact solver
    :func:`solve_all_numbers`. With 5 or 6 numbers almost every set is solvable (of the 6188
    five-number multisets over 1..13 only 84 are not, all with repeated values), so "no solution"
    items are drawn from sets with few distinct values; the same share of the solvable items is
    drawn from that distribution too, so repeated numbers alone do not give the label away. Hard
    uses numbers up to 20: over 1..13 the unsolvable 6-number sets are only a handful.
    """

    name = "game24"
    category = "Arithmetic"
    presets = {
        "easy": {"count": 4, "max_number": 13, "no_solution_rate": 0.2},
        "medium": {"count": 5, "max_number": 13, "no_solution_rate": 0.15},
        "hard": {"count": 6, "max_number": 20, "no_solution_rate": 0.12},
    }
    test_knobs = [{"count": 3, "no_solution_rate": 0.5}, {"count": 4, "max_number": 30, "no_solution_rate": 0.0}]
    #: Longest answer body accepted (the parser has its own, tighter bound).
    max_answer_chars = 256

    def build(self, rng, count, max_number, no_solution_rate):
        if count < 1 or max_number < 1:
            raise ValueError(f"game24: count and max_number must be >= 1 (got {count}, {max_number})")
        want_unsolvable = rng.random() < no_solution_rate
        for _ in range(300):
            few = want_unsolvable or rng.random() < 0.5
            numbers = _sample_game24_numbers(rng, count, max_number, few)
            expression = solve_all_numbers(numbers, GAME24_TARGET)
            if (expression is None) == want_unsolvable:
                break
        # after 300 draws (only for knob settings where the wanted label is nearly impossible)
        # the last draw is kept with its true label
        solvable = expression is not None
        shown = ", ".join(map(str, numbers))
        question = (
            f"Game of 24. Numbers: {shown}\n\n"
            f"Combine ALL of these numbers, each exactly once, with + - * / and parentheses so that "
            f"the result is exactly {GAME24_TARGET}. Division is exact (fractions are allowed in "
            "intermediate steps). Numbers may not be joined into new numbers and there is no unary "
            "minus. Answer with the expression only, for example (a + b) * c - d written with the "
            f"given numbers. If no such expression exists, answer exactly: {NO_SOLUTION}"
        )
        metadata = {"numbers": numbers, "target": GAME24_TARGET, "solvable": solvable}
        return question, expression if solvable else NO_SOLUTION, metadata

    def verify(self, answer, metadata):
        if not isinstance(answer, str) or len(answer) > self.max_answer_chars:
            return False
        if says_no_solution(answer):
            return metadata.get("solvable") is False
        parsed = _expression_value(answer, metadata["target"])
        if parsed is None:
            return False
        value, used = parsed
        return used == sorted(metadata["numbers"]) and value == metadata["target"]

    def feedback(self, answer, metadata):
        return expression_feedback(answer, metadata, every_number=True, max_chars=self.max_answer_chars)

    def corruptions(self, puzzle, rng):
        numbers = puzzle.metadata["numbers"]
        body = puzzle.answer[len("<answer>") : -len("</answer>")]
        total = sum(numbers)
        wrong = [
            " + ".join(map(str, numbers)) + " + 1",  # a number that is not in the puzzle
            f"{max(numbers) + 100}",  # a single foreign number
            "24",
            "",
            "(" * 40 + "1" + ")" * 40,
        ]
        if total != GAME24_TARGET:
            wrong.append(" + ".join(map(str, numbers)))  # right numbers, wrong value
        if puzzle.metadata["solvable"]:
            wrong += [
                NO_SOLUTION,
                f"({body}) * {numbers[0]} / {numbers[0]}",  # value 24 but a number used twice
                " * ".join(map(str, numbers[:-1])),  # a number left out
            ]
        else:
            wrong.append(f"({' + '.join(map(str, numbers))}) / 0")  # division by zero
        return wrong


def _random_target_expression(rng: random.Random, numbers: list[int], use: int) -> tuple[int, str]:
    """Combine ``use`` randomly chosen numbers by random operations, keeping every intermediate
    a positive integer (so the gold expression reads naturally): (value, expression)."""
    items = [(numbers[i], str(numbers[i])) for i in rng.sample(range(len(numbers)), use)]
    while len(items) > 1:
        i, j = rng.sample(range(len(items)), 2)
        (a, ea), (b, eb) = items[i], items[j]
        options = [(a + b, f"({ea} + {eb})")]
        if a != 1 and b != 1:
            options.append((a * b, f"({ea} * {eb})"))
        if a > b:
            options.append((a - b, f"({ea} - {eb})"))
        if b > 1 and a % b == 0:
            options.append((a // b, f"({ea} / {eb})"))
        value = rng.choice(options)
        items = [it for k, it in enumerate(items) if k not in (i, j)] + [value]
    value, expr = items[0]
    return value, expr[1:-1] if expr.startswith("(") else expr


@register
class Countdown(Task):
    """Reach a target with + - * / and parentheses, using each given number AT MOST once.

    Every instance is solvable by construction (the target is the value of a random expression over
    the numbers). Any expression hitting the target exactly while respecting the at-most-once rule
    (checked as a sub-multiset of the given numbers) scores 1.
    """

    name = "countdown"
    category = "Arithmetic"
    presets = {
        "easy": {"count": 5, "max_number": 25, "target_min": 30, "target_max": 100},
        "medium": {"count": 6, "max_number": 50, "target_min": 50, "target_max": 200},
        "hard": {"count": 7, "max_number": 100, "target_min": 100, "target_max": 500},
    }
    test_knobs = [{"count": 3, "target_min": 10, "target_max": 60, "max_number": 10}, {"count": 8, "target_max": 999}]
    max_answer_chars = 256

    def build(self, rng, count, max_number, target_min, target_max):
        if count < 2 or target_min > target_max or max_number < 2:
            raise ValueError(f"countdown: need count >= 2, max_number >= 2 and target_min <= target_max (got {count}, {max_number}, {target_min}, {target_max})")
        for _ in range(10_000):
            numbers = [rng.randint(1, max_number) for _ in range(count)]
            target, expression = _random_target_expression(rng, numbers, rng.randint(2, count))
            if target_min <= target <= target_max:
                break
        else:
            raise ValueError(f"countdown: no target in [{target_min}, {target_max}] reachable with numbers up to {max_number}; widen the target range")
        shown = ", ".join(map(str, numbers))
        question = (
            f"Countdown. Numbers: {shown}\nTarget: {target}\n\n"
            "Write an arithmetic expression equal to the target using + - * / and parentheses. "
            "Each listed number may be used AT MOST ONCE (a number listed twice may be used twice); "
            "you do not have to use all of them. Numbers may not be joined into new numbers and there "
            "is no unary minus. Division is exact (fractions are allowed in intermediate steps). "
            "Answer with the expression only, for example (a + b) * c written with the given numbers."
        )
        metadata = {"numbers": numbers, "target": target}
        return question, expression, metadata

    def verify(self, answer, metadata):
        if not isinstance(answer, str) or len(answer) > self.max_answer_chars:
            return False
        parsed = _expression_value(answer, metadata["target"])
        if parsed is None:
            return False
        value, used = parsed
        return is_sub_multiset(used, metadata["numbers"]) and value == metadata["target"]

    def feedback(self, answer, metadata):
        return expression_feedback(answer, metadata, every_number=False, max_chars=self.max_answer_chars)

    def corruptions(self, puzzle, rng):
        numbers, target = puzzle.metadata["numbers"], puzzle.metadata["target"]
        body = puzzle.answer[len("<answer>") : -len("</answer>")]
        wrong = [
            f"({body}) + 1" if 1 not in numbers else f"({body}) * 1 + 1",  # target + 1
            str(target),  # the target is not one of the numbers (unless it is, see below)
            NO_SOLUTION,
            "",
            f"{body} +",
        ]
        if target in numbers:
            wrong.remove(str(target))
        once = [x for x in numbers if numbers.count(x) == 1]
        if once:  # value is the target, but a number is used more often than it is given
            x = rng.choice(once)
            wrong.append(f"({body}) + {x} - {x}")
        return wrong
