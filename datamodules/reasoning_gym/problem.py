"""One reasoning-gym item as a Problem: our prompt convention, reasoning-gym's scorer, bounded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lit_reason.tasks.answer import ANSWER_INSTRUCTION, extract_answer, format_answer
from lit_reason.tasks.problem import safe_score


def make_prompt(question: str) -> str:
    """The reasoning-gym question, then the project's one answer convention (``<answer>`` tags,
    which is also how reasoning-gym's own ``extract_answer`` reads an answer)."""
    return f"{question.rstrip()}\n\n{ANSWER_INSTRUCTION}"


@dataclass
class ReasoningGymProblem:
    """A reasoning-gym entry with our prompt; ``score`` runs the task's own ``score_answer`` on the
    last ``<answer>`` block in the scorer process (never raises, at most ``timeout`` seconds).

    Attributes:
        task: the reasoning-gym task name.
        prompt / answer: what the policy sees; a complete correct completion (the entry's answer
            in tags; tasks with several valid answers accept others too).
        entry: reasoning-gym's item (question, answer, metadata), handed to its scorer.
        config: the task's config dataclass (the scorer process rebuilds the dataset from it).
        metadata: group tags (task, category, level) for grouped accuracy, plus ``index``.
    """

    task: str
    prompt: str
    answer: str
    entry: dict = field(repr=False)
    config: Any = field(repr=False)
    metadata: dict = field(default_factory=dict)
    timeout: float = 2.0

    @classmethod
    def from_entry(cls, task: str, entry: dict, config: Any, metadata: dict, timeout: float) -> "ReasoningGymProblem":
        gold = entry.get("answer")
        return cls(task, make_prompt(entry["question"]), format_answer("" if gold is None else str(gold)),
                   entry, config, metadata, timeout)

    def score(self, completion: str) -> float:
        return safe_score(self._score, completion)

    def _score(self, completion: str) -> float:
        body = extract_answer(completion)
        if body is None:
            return 0.0
        from datamodules.reasoning_gym.worker import scorer

        return scorer().score(self.task, self.config, body, self.entry, self.timeout)
