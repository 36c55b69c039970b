"""Environments: problems that answer back, one multi-turn episode each.

An environment is built per episode from a problem (``make(problem, **args) -> Environment``).
``reset()`` gives the first prompt (text or chat messages, like ``Problem.prompt``);
``step(assistant_text)`` answers the model's turn with an :class:`Observation`: the next messages
(the environment's turn), an optional reward and whether the episode is over. The episode's reward
is the last reward given (``reward: last``) or their sum (``reward: sum``). A plain ``Problem`` is
a one-turn episode (:class:`SingleTurn`); :class:`Retry` lets the model try again after a wrong
answer, with the verifier's feedback as the next user message.

The rollout step that runs episodes is :mod:`lit_reason.rollout_step.episodes`; the environment
never sees token ids, so it cannot change what was sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from lit_reason.tasks.problem import safe_score
from lit_reason.utils.imports import import_path

EPISODE_REWARDS = ("last", "sum")


@dataclass
class Observation:
    """The environment's answer to one assistant turn."""

    messages: list[dict[str, str]] = field(default_factory=list)  # the next turn (unused when done)
    reward: float | None = None
    done: bool = False


@runtime_checkable
class Environment(Protocol):
    """One episode: ``reset`` once, then ``step`` after every assistant turn until ``done``."""

    def reset(self) -> Any: ...

    def step(self, assistant_text: str) -> Observation: ...


def episode_reward(rewards: list[float | None], mode: str = "last") -> float:
    """The episode's reward from the per-turn rewards (None = no reward that turn): the last one
    given (``last``; 0 when none was) or the sum of those given (``sum``). NaN and inf count 0."""
    given = [float(r) for r in rewards if r is not None]
    given = [r if math.isfinite(r) else 0.0 for r in given]
    if mode == "sum":
        return sum(given)
    if mode == "last":
        return given[-1] if given else 0.0
    raise ValueError(f"episode reward {mode!r}: choose one of {EPISODE_REWARDS}")


class SingleTurn:
    """A plain Problem as a one-turn episode: its prompt, then its verifier's score."""

    def __init__(self, problem: Any) -> None:
        self.problem = problem

    def reset(self) -> Any:
        return self.problem.prompt

    def step(self, assistant_text: str) -> Observation:
        return Observation(reward=self.problem.score(assistant_text), done=True)


def default_feedback(problem: Any, completion: str) -> str:
    """What :class:`Retry` says after a wrong answer: the problem's own ``feedback(completion)``
    where it has one (Enigmata puzzles do), else a plain "wrong"."""
    own = getattr(problem, "feedback", None)
    if callable(own):
        try:
            text = own(completion)
        except Exception:  # noqa: BLE001 - a feedback bug must not end training; say the plain thing
            text = None
        if text:
            return str(text)[:2000]
    return "That answer is not correct."


class Retry:
    """k attempts at a problem: a wrong answer is answered with the verifier's feedback and a
    request to try again; every attempt is scored, so ``reward: last`` trains on the last one."""

    def __init__(self, problem: Any, attempts: int = 3, retry_prompt: str = "Try again.") -> None:
        if attempts < 1:
            raise ValueError(f"retry environment: attempts must be >= 1, got {attempts}")
        self.problem, self.attempts, self.retry_prompt = problem, attempts, retry_prompt
        self.tried = 0

    def reset(self) -> Any:
        self.tried = 0
        return self.problem.prompt

    def step(self, assistant_text: str) -> Observation:
        self.tried += 1
        score = safe_score(self.problem.score, assistant_text)
        if score >= 1.0 or self.tried >= self.attempts:
            return Observation(reward=score, done=True)
        feedback = default_feedback(self.problem, assistant_text)
        return Observation([{"role": "user", "content": f"{feedback} {self.retry_prompt}".strip()}], reward=score)


#: short names of the built-in environment makers (``model.episodes.environment``)
ENVIRONMENTS: dict[str, str] = {
    "single_turn": "lit_reason.tasks.environment:SingleTurn",
    "retry": "lit_reason.tasks.environment:Retry",
    "tools": "lit_reason.tasks.tools.environment:ToolUse",
    "trl": "lit_reason.tasks.tools.trl_environment:TRLEnvironment",
    "verifiers": "lit_reason.tasks.verifiers_env:VerifiersEnvironment",
}


def resolve_environment(name: str) -> Callable[..., Any]:
    """A built-in name or ``package.module:Class`` (a callable ``(problem, **args) -> Environment``)."""
    maker = import_path(ENVIRONMENTS.get(name, name), "model.episodes.environment", list(ENVIRONMENTS))
    if not callable(maker):
        raise ValueError(f"model.episodes.environment={name!r} is not callable")
    return maker
