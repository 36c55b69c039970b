"""One reasoning-gym item as a Problem: our prompt convention, reasoning-gym's scorer, bounded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datamodules.tagged import score_tagged, tagged_prompt
from lit_reason.tasks.answer import format_answer


@dataclass
class ReasoningGymProblem:
    """A reasoning-gym entry with our prompt (the question, then the ``<answer>`` tag instruction,
    which is also how reasoning-gym's own ``extract_answer`` reads an answer); ``score`` runs the
    task's own ``score_answer`` on the last ``<answer>`` block in the scorer process (never raises,
    at most ``timeout`` seconds).

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
        return cls(task, tagged_prompt(entry["question"]), format_answer("" if gold is None else str(gold)),
                   entry, config, metadata, timeout)

    def score(self, completion: str) -> float:
        return score_tagged(completion, self._check)

    def _check(self, body: str) -> float:
        from datamodules.reasoning_gym.worker import scorer

        return scorer().score(self.task, self.config, body, self.entry, self.timeout)
