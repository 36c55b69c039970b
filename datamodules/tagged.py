"""Prompt and score of the generated puzzle sources (Enigmata, reasoning-gym) that state the
project's answer convention as is: one copy, so both write it into the prompt and read it back
from a completion the same way."""

from __future__ import annotations

from typing import Callable

from lit_reason.tasks.answer import ANSWER_INSTRUCTION, extract_answer
from lit_reason.tasks.problem import safe_score


def tagged_prompt(question: str) -> str:
    """The question, a blank line, then the answer instruction (``<answer>`` tags)."""
    return f"{question.rstrip()}\n\n{ANSWER_INSTRUCTION}"


def score_tagged(completion: str, check: Callable[[str], float]) -> float:
    """``check`` of the last ``<answer>`` body of ``completion``; 0.0 without one. Never raises
    and stays in [0, 1] (:func:`~lit_reason.tasks.problem.safe_score`)."""

    def score(text: str) -> float:
        body = extract_answer(text)
        return 0.0 if body is None else check(body)

    return safe_score(score, completion)
