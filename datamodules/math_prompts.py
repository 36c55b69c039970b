"""Prompt templates for math problems: plain text or chat messages, with named system prompts.

``prompt_format="chat"`` yields ``[{"role": "system", ...}, {"role": "user", question}]``; the
module renders it with the tokenizer's chat template. ``"plain"`` yields one string (question,
blank line, instruction) for base models without a template.

Named system prompts (``system_prompt=``):

* ``default``: the project's answer-tag instruction (``lit_reason.tasks.answer.ANSWER_INSTRUCTION``).
* ``intuitor``: the system prompt of the Intuitor recipes (open-r1-intuitor config files,
  MATH-lighteval training): reason step by step, answer in ``\\boxed{}``.
* ``nthr``: the standard Qwen2.5-Math chain-of-thought prompt. The NTHR paper's exact template
  was not found in its public material; NTHR trains Qwen2.5-Math models whose usual CoT prompt is
  this one, so it stands in for it.
* ``none``: no instruction at all (the question alone).

Every MathProblem accepts both conventions (``<answer>`` tags and ``\\boxed{}``), so the choice of
system prompt never changes how a completion is scored.
"""

from __future__ import annotations

from lit_reason.tasks.answer import ANSWER_INSTRUCTION

SYSTEM_PROMPTS: dict[str, str] = {
    "default": ANSWER_INSTRUCTION,
    "intuitor": (
        "You are a helpful AI Assistant, designed to provided well-reasoned and detailed responses. "
        "You FIRST think about the reasoning process step by step and then provide the user with the answer. "
        "Please enclose your final answer in the box: \\boxed{Your Answer}. "
        "Please stop generation immediately after outputing the box."
    ),
    "nthr": "Please reason step by step, and put your final answer within \\boxed{}.",
    "none": "",
}

PROMPT_FORMATS = ("plain", "chat")


def resolve_system_prompt(name: str, text: str | None = None) -> str:
    """The system prompt text: ``text`` when given, else the named one (unknown name: one-line error)."""
    if text is not None:
        return text
    if name not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown data.system_prompt {name!r}: choose one of {sorted(SYSTEM_PROMPTS)} or set data.system_prompt_text")
    return SYSTEM_PROMPTS[name]


def check_prompt_format(prompt_format: str) -> str:
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown data.prompt_format {prompt_format!r}: choose 'plain' (one string) or 'chat' (system/user messages)")
    return prompt_format


def build_prompt(question: str, system: str, prompt_format: str = "plain") -> str | list[dict[str, str]]:
    """The prompt for ``question`` with instruction ``system`` in the given format."""
    question = question.strip()
    if check_prompt_format(prompt_format) == "chat":
        messages = [{"role": "system", "content": system}] if system else []
        return messages + [{"role": "user", "content": question}]
    return f"{question}\n\n{system}" if system else question
