"""The text of an environment's turn, appended after a sampled assistant turn, never re-rendered.

Re-rendering a whole conversation with the chat template after each turn is how multi-turn
trainers end up training on tokens that were never sampled: templates drop an earlier ``<think>``
block, trim whitespace, or tokenise a boundary differently. Here the episode is the sampled ids
with the environment's turn appended, and the environment's turn is read off the template once:
render a probe conversation ``[user U, assistant A]``, then the same with the observation
messages and the generation prompt added; what follows the probe is the observation wrapped the
template's way, and what followed ``A`` is how the template closes an assistant turn (the part of
it the model already sampled, its end-of-turn token, is not repeated).
"""

from __future__ import annotations

from typing import Any

_PROBE_USER, _PROBE_ASSISTANT = "lit-reason-probe-user-5e1f", "lit-reason-probe-assistant-9c2d"


class TurnWrapper:
    """``text(messages, ended_by)``: what to append after an assistant turn that ended with the
    text ``ended_by`` (its end-of-turn token, or None when it was cut or stopped by a stop string)
    so that ``messages`` are shown and the model's next turn starts.

    ``templated=False`` (plain prompts): the observation's contents between blank lines."""

    def __init__(self, tokenizer: Any, templated: bool) -> None:
        self.tokenizer, self.templated = tokenizer, templated
        self.closer = "\n"
        if templated:
            self.probe = [{"role": "user", "content": _PROBE_USER}, {"role": "assistant", "content": _PROBE_ASSISTANT}]
            self.base = tokenizer.apply_chat_template(self.probe, tokenize=False)
            if _PROBE_ASSISTANT not in self.base:
                raise ValueError("the chat template does not show an assistant message's content: multi-turn episodes "
                                 "need a template that renders assistant turns (or model.prompt_format=plain)")
            self.closer = self.base[self.base.rindex(_PROBE_ASSISTANT) + len(_PROBE_ASSISTANT):]

    def text(self, messages: list[dict[str, str]], ended_by: str | None) -> str:
        check_messages(messages)
        closer = self.closer
        if ended_by and closer.startswith(ended_by):
            closer = closer[len(ended_by):]
        if not self.templated:
            return closer + "".join(f"\n{m['content']}\n" for m in messages) + "\n"
        full = self.tokenizer.apply_chat_template(self.probe + list(messages), tokenize=False, add_generation_prompt=True)
        if not full.startswith(self.base):
            raise ValueError("the chat template renders the earlier turns differently once an observation follows; "
                             "an environment turn cannot be appended to it")
        return closer + full[len(self.base):]


def check_messages(messages: Any) -> None:
    """An observation's messages: a list of ``{"role": str, "content": str}`` (one line otherwise)."""
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise ValueError(f"an observation's messages must be a list of {{'role': str, 'content': str}}, got {messages!r:.200}")
