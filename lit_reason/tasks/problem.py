"""The Problem protocol: what a DataModule hands to a module.

A problem carries its own checker, so RL modules never import a dataset. Puzzles, math items and
a user's own data only have to provide ``prompt`` and ``score``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

log = logging.getLogger(__name__)

Prompt = "str | list[dict[str, str]]"


@runtime_checkable
class Problem(Protocol):
    """Anything with a prompt (plain text or chat messages) and a never-raising scorer in [0, 1]."""

    prompt: Any

    def score(self, completion: str) -> float: ...


def safe_score(scorer: Callable[[str], float], completion: str) -> float:
    """Call a scorer on untrusted text; any exception or out-of-range value becomes 0.0.

    Verifiers are written not to raise, this is the last line of defence so a bug in one task can
    never stop a training run.
    """
    try:
        value = float(scorer(completion))
    except Exception as err:  # noqa: BLE001 - model output must never crash training
        log.debug("scorer raised %s: %s", type(err).__name__, err)
        return 0.0
    if value != value or value < 0.0:  # NaN or negative
        return 0.0
    return min(value, 1.0)


@dataclass
class TextProblem:
    """A generic problem: a prompt, a gold completion, and a verifier over the completion text.

    Args:
        prompt: the text (or chat messages) shown to the policy.
        answer: a complete correct completion (``score(answer) == 1.0``).
        verify: ``completion -> float`` in [0, 1]; may raise, :meth:`score` shields callers.
        metadata: free-form tags (task, category, difficulty, ...) used for grouped metrics.
    """

    prompt: Any
    answer: str
    verify: Callable[[str], float] = field(repr=False)
    metadata: dict = field(default_factory=dict)

    def score(self, completion: str) -> float:
        return safe_score(self.verify, completion)
