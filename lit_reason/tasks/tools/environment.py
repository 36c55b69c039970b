"""Tool use as an environment: the model may call tools (their results are the next turn) before it
answers; the answer is scored by the problem's verifier. Malformed calls are answered with the
reason and counted (``malformed_calls``); they never end training."""

from __future__ import annotations

from typing import Any

from lit_reason.tasks.environment import Observation
from lit_reason.tasks.problem import safe_score
from lit_reason.tasks.prompts import as_messages
from lit_reason.tasks.tools.calls import FORMAT, parse_tool_calls
from lit_reason.tasks.tools.registry import ToolRegistry


class ToolUse:
    """``problem`` with ``tools`` (names from YAML: built-ins or ``package.module:function``); the
    tool list and the call format are stated in a system message before the problem's prompt."""

    def __init__(self, problem: Any, tools: list[str] | None = None, tool_role: str = "tool",
                 registry: ToolRegistry | None = None) -> None:
        self.problem, self.tool_role = problem, tool_role
        self.registry = registry or ToolRegistry.from_names(list(tools or ["calculator"]))
        self.calls = self.malformed_calls = 0

    def reset(self) -> list[dict[str, str]]:
        return self.with_tools(as_messages(self.problem.prompt))

    def with_tools(self, prompt: list[dict[str, str]]) -> list[dict[str, str]]:
        """``prompt`` with the tool list and the call format in its system message."""
        tools = f"You can use these tools:\n{self.registry.describe()}\n{FORMAT}"
        messages = [dict(m) for m in prompt]
        if messages and messages[0].get("role") == "system":  # one system message: the problem's, then the tools
            messages[0]["content"] = f"{messages[0]['content']}\n\n{tools}"
            return messages
        return [{"role": "system", "content": tools}, *messages]

    def step(self, assistant_text: str) -> Observation:
        calls = parse_tool_calls(assistant_text)
        if not calls:
            return Observation(reward=self.final_reward(assistant_text), done=True)
        return Observation([{"role": self.tool_role, "content": r} for r in self.answer_calls(calls)])

    def answer_calls(self, calls: list[Any]) -> list[str]:
        """Each call's result as text (a malformed one's reason), counted."""
        results = []
        for call in calls:
            self.calls += 1
            if call.error is not None:
                self.malformed_calls += 1
                results.append(f"error: {call.error}")
            else:
                results.append(self.registry.call(call.name, call.arguments))
        return results

    def final_reward(self, answer: str) -> float:
        return safe_score(self.problem.score, answer)
