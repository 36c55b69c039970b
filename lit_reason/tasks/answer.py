"""The one answer convention of the project: the LAST ``<answer>...</answer>`` block.

Every puzzle and the built-in math corpus state this convention in their prompt, and every
verifier reads the model's answer through :func:`extract_answer`, so a user's own task only has to
say "put the answer in <answer></answer>" to be scored the same way.

Model output is untrusted: extraction is bounded in size (completions longer than
``MAX_COMPLETION_CHARS`` are refused outright) and uses no regular expression that can backtrack.
"""

from __future__ import annotations

OPEN_TAG = "<answer>"
CLOSE_TAG = "</answer>"
ANSWER_INSTRUCTION = "Give your final answer inside <answer></answer> tags, for example <answer>...</answer>."

#: Completions above this size are not parsed at all (they score 0): no honest answer is this long.
MAX_COMPLETION_CHARS = 65_536
#: The answer body itself is bounded too (the largest legitimate body, a 16x16 grid, is ~1 KB).
MAX_ANSWER_CHARS = 8_192


def extract_answer(text: object, max_chars: int = MAX_ANSWER_CHARS) -> str | None:
    """Return the stripped body of the last complete ``<answer>...</answer>`` block, or None.

    None means "no answer": wrong type, no closed block, an over-long completion or body.
    """
    if not isinstance(text, str) or len(text) > MAX_COMPLETION_CHARS:
        return None
    end = text.rfind(CLOSE_TAG)
    if end < 0:
        return None
    start = text.rfind(OPEN_TAG, 0, end)
    if start < 0:
        return None
    body = text[start + len(OPEN_TAG) : end].strip()
    if len(body) > max_chars:
        return None
    return body


def format_answer(body: str) -> str:
    """Wrap ``body`` in the answer tags: the canonical form of a gold completion."""
    return f"{OPEN_TAG}{body}{CLOSE_TAG}"


def count_answer_blocks(text: str) -> int:
    """How many closed answer blocks a completion holds (HRPO gives 0 reward to more than one)."""
    if not isinstance(text, str) or len(text) > MAX_COMPLETION_CHARS:
        return 0
    return text.count(CLOSE_TAG)
