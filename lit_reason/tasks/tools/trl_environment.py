"""An environment class written for the reference trainer's ``environment_factory``, unchanged.

That contract: ``factory()`` builds an instance; ``reset(**example)`` starts an episode and may
return text appended to the last user message; every other public method is a tool (type hints
and docstring give its schema); an optional ``get_reward()`` scores the finished episode from the
environment's state. Here ``example`` is the problem's ``prompt``, ``answer`` and ``metadata``
fields; the episode ends at the first turn without a tool call; without ``get_reward`` the
problem's verifier scores that turn.
"""

from __future__ import annotations

import inspect
from typing import Any

from lit_reason.tasks.prompts import as_messages
from lit_reason.tasks.tools.environment import ToolUse
from lit_reason.tasks.tools.registry import ToolRegistry, tool_from_function
from lit_reason.utils.imports import import_path

_CONTROL = ("reset", "get_reward")


def example_fields(problem: Any) -> dict[str, Any]:
    """What ``reset(**example)`` receives: a dataset row's fields, read off the problem."""
    fields = {"prompt": problem.prompt}
    if hasattr(problem, "answer"):
        fields["answer"] = problem.answer
    return {**fields, **dict(getattr(problem, "metadata", None) or {})}


class TRLEnvironment(ToolUse):
    """``environment: trl`` with ``environment_args: {factory: package.module:Class}``."""

    def __init__(self, problem: Any, factory: str, tool_role: str = "tool") -> None:
        self.instance = import_path(factory, "model.episodes.environment_args.factory")()
        methods = [getattr(self.instance, name) for name, _ in inspect.getmembers(type(self.instance), inspect.isfunction)
                   if name not in _CONTROL and not name.startswith("_")]
        super().__init__(problem, tool_role=tool_role, registry=ToolRegistry([tool_from_function(m) for m in methods]))

    def reset(self) -> list[dict[str, str]]:
        observation = self.instance.reset(**example_fields(self.problem))
        messages = [dict(m) for m in as_messages(self.problem.prompt)]
        if isinstance(observation, str) and messages:
            messages[-1]["content"] = f"{messages[-1]['content']}{observation}"
        return self.with_tools(messages)

    def final_reward(self, answer: str) -> float:
        get_reward = getattr(self.instance, "get_reward", None)
        return float(get_reward()) if callable(get_reward) else super().final_reward(answer)

