"""Tools from YAML: type-hinted Python functions whose signature and docstring become the schema
shown to the model (``transformers.utils.get_json_schema``, the format chat templates take)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from transformers.utils import get_json_schema

from lit_reason.utils.imports import import_path

#: built-in tools by name (``tools: [calculator, python]``); anything else is ``package.module:function``
BUILTIN_TOOLS = {"calculator": "lit_reason.tasks.tools.calculator:calculator",
                 "python": "lit_reason.tasks.tools.python_tool:python"}


@dataclass
class Tool:
    name: str
    fn: Callable[..., Any]
    schema: dict  # {"type": "function", "function": {"name", "description", "parameters"}}


def tool_from_function(fn: Callable[..., Any]) -> Tool:
    """A tool of a function with type hints and a Google-style docstring (one line per argument)."""
    try:
        schema = get_json_schema(fn)
    except Exception as err:  # noqa: BLE001 - transformers raises its own error types; one line with the fix
        raise ValueError(f"tool {getattr(fn, '__name__', fn)!r}: {err} (give every argument a type hint and an "
                         "'Args:' line in the docstring)") from err
    return Tool(schema["function"]["name"], fn, schema)


def resolve_tool(name: str) -> Tool:
    """A built-in tool name or ``package.module:function``."""
    return tool_from_function(import_path(BUILTIN_TOOLS.get(name, name), "tool", list(BUILTIN_TOOLS)))


class ToolRegistry:
    """The tools of an environment by name; :meth:`call` turns any failure into text for the model."""

    def __init__(self, tools: list[Tool]) -> None:
        self.tools = {t.name: t for t in tools}

    @classmethod
    def from_names(cls, names: list[str]) -> "ToolRegistry":
        return cls([resolve_tool(n) for n in names])

    def schemas(self) -> list[dict]:
        return [t.schema for t in self.tools.values()]

    def describe(self) -> str:
        """The tool list as the prompt states it: one JSON schema a line."""
        return "\n".join(json.dumps(t.schema["function"]) for t in self.tools.values())

    def call(self, name: str, arguments: Any) -> str:
        """The tool's result as text; an unknown tool, bad arguments or an error become the text."""
        tool = self.tools.get(name)
        if tool is None:
            return f"error: unknown tool {name!r}; tools: {', '.join(self.tools)}"
        if not isinstance(arguments, dict):
            return f"error: the arguments of {name!r} must be a JSON object"
        try:
            return str(tool.fn(**arguments))[:4000]
        except Exception as err:  # noqa: BLE001 - a tool's failure is the model's observation, never the run's end
            return f"error: {type(err).__name__}: {str(err)[:500]}"
