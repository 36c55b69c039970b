"""One episode of a rollout, token by token: which tokens the model sampled (trained, with the
sampler's log-prob) and which the environment wrote (context only). What docs/episodes.md shows,
and what to look at when a multi-turn run trains on something it should not."""

from __future__ import annotations

from typing import Any

from lit_reason.rollout import Rollout


def episode_tokens(rollout: Rollout, row: int, tokenizer: Any) -> list[tuple[int, int, str, str, float | None]]:
    """``(position, id, text, who, logprob)`` for every token of episode ``row`` after its prompt;
    ``who`` is ``model`` (in the loss) or ``env`` (context); logprob is None for ``env``."""
    out = []
    context, loss = rollout.context_mask[row], rollout.completion_mask[row]
    for pos in range(int(context.sum())):
        token = int(rollout.completion_ids[row, pos])
        sampled = bool(loss[pos])
        out.append((pos, token, tokenizer.decode([token]), "model" if sampled else "env",
                    float(rollout.logprobs[row, pos]) if sampled else None))
    return out


def episode_table(rollout: Rollout, row: int, tokenizer: Any) -> str:
    """:func:`episode_tokens` as a Markdown table."""
    lines = ["| pos | id | token | who | sampler log-prob |", "|---:|---:|---|---|---:|"]
    for pos, token, text, who, logp in episode_tokens(rollout, row, tokenizer):
        shown = repr(text).replace("|", "\\|")  # newlines and spaces visible, pipes kept out of the table
        lines.append(f"| {pos} | {token} | {shown} | {who} | {'' if logp is None else f'{logp:.4f}'} |")
    return "\n".join(lines)
