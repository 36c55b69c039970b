"""Tool calls in a completion, in the format the prompt states: a JSON object
``{"name": ..., "arguments": {...}}`` inside ``<tool_call></tool_call>`` tags. Bounded: long
texts and many calls are cut, malformed calls are reported, nothing raises."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)
MAX_CALL_CHARS, MAX_CALLS = 4000, 4

FORMAT = (f"To call a tool, write {OPEN}{{\"name\": \"<tool name>\", \"arguments\": {{...}}}}{CLOSE} and stop; "
          "its result comes back in the next message. When you are done, give your final answer without a tool call.")


@dataclass
class ToolCall:
    name: str | None
    arguments: Any
    error: str | None = None  # why the call could not be read (then name/arguments are None)


def parse_tool_calls(text: str, max_calls: int = MAX_CALLS) -> list[ToolCall]:
    """The tool calls in ``text``, at most ``max_calls`` (the rest ignored)."""
    calls = []
    for match in _CALL.finditer(text):
        if len(calls) == max_calls:
            break
        body = match.group(1).strip()
        if len(body) > MAX_CALL_CHARS:
            calls.append(ToolCall(None, None, f"the tool call is longer than {MAX_CALL_CHARS} characters"))
            continue
        try:
            data = json.loads(body)
        except ValueError as err:
            calls.append(ToolCall(None, None, f"the tool call is not valid JSON ({err})"))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            calls.append(ToolCall(None, None, 'a tool call must be {"name": "...", "arguments": {...}}'))
            continue
        calls.append(ToolCall(data["name"], data.get("arguments", {})))
    if not calls and OPEN in text:
        calls.append(ToolCall(None, None, f"a {OPEN} without its {CLOSE}"))
    return calls
