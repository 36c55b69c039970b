"""Prompt encoding shared by every module: chat template (or plain text), then the length limit.

A prompt is a string or a list of chat messages. With a chat template, the rendered text already
holds the template's special tokens, so it is tokenized WITHOUT adding special tokens again (no
second BOS). A prompt over ``max_length`` tokens is cut inside the user's text, never inside the
template: the system prompt, the role markers and the generation prompt always survive, and the
start of the last user message is dropped (its end, usually the question, is kept). A limit too
small for the template alone is an error naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROMPT_FORMATS = ("auto", "chat", "plain")
LONG_PROMPT_POLICIES = ("truncate", "error")


class PromptTooLongError(ValueError):
    """A prompt does not fit ``max_prompt_length`` and may not (or cannot) be cut."""


@dataclass
class EncodedPrompt:
    ids: list[int]
    truncated: bool  # the user text was cut to fit


def as_messages(prompt: Any) -> list[dict[str, str]]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]


def uses_chat_template(tokenizer: Any, prompt: Any, prompt_format: str) -> bool:
    """Chat messages always go through the template; plain strings do under ``chat``, and under
    ``auto`` when the tokenizer has a template."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    templated = isinstance(prompt, list) or prompt_format == "chat" or (prompt_format == "auto" and has_template)
    if templated and not has_template:
        raise ValueError("chat prompt given but the tokenizer has no chat template: set model.prompt_format=plain")
    return templated


def render_prompt(tokenizer: Any, prompt: Any, prompt_format: str) -> tuple[str, bool]:
    """``(text, templated)``: the text the model reads before its completion."""
    if uses_chat_template(tokenizer, prompt, prompt_format):
        return tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True), True
    return str(prompt), False


def encode_prompt(tokenizer: Any, prompt: Any, prompt_format: str, max_length: int,
                  long_prompt: str = "truncate") -> EncodedPrompt:
    """Token ids of ``prompt`` rendered for generation, at most ``max_length`` of them."""
    text, templated = render_prompt(tokenizer, prompt, prompt_format)
    ids = _tokenize(tokenizer, text, templated)
    if len(ids) <= max_length:
        return EncodedPrompt(ids, False)
    if long_prompt == "error":
        raise PromptTooLongError(f"a prompt has {len(ids)} tokens > the limit of {max_length} (model.max_prompt_length): "
                                 "raise the limit or set model.long_prompt=truncate")
    if templated:
        messages = [dict(m) for m in as_messages(prompt)]
        index = _last_user_message(messages)

        def rebuild(content: str) -> str:
            messages[index]["content"] = content
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

        content = str(messages[index]["content"])
    else:
        rebuild, content = (lambda c: c), text
    return EncodedPrompt(_cut_content(tokenizer, rebuild, content, templated, len(ids), max_length), True)


def _tokenize(tokenizer: Any, text: str, templated: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=not templated)["input_ids"]


def _last_user_message(messages: list[dict[str, str]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return len(messages) - 1


def _cut_content(tokenizer: Any, rebuild, content: str, templated: bool, full_length: int, max_length: int) -> list[int]:
    """Drop tokens from the start of ``content`` until ``rebuild(content)`` fits. The first guess
    is exact unless tokens merge across the cut; a few corrections cover that."""
    content_ids = tokenizer(content, add_special_tokens=False)["input_ids"]
    frame = full_length - len(content_ids)  # template (or special-token) tokens around the content
    keep = max_length - frame
    for _ in range(8):
        if keep <= 0:
            break
        ids = _tokenize(tokenizer, rebuild(tokenizer.decode(content_ids[-keep:])), templated)
        if len(ids) <= max_length:
            return ids
        keep -= len(ids) - max_length
    raise PromptTooLongError(f"the prompt's template alone is about {frame} tokens, which leaves no room for the user "
                             f"text in {max_length} tokens: raise model.max_prompt_length (SFT: also model.max_length)")
