"""The rollout contract every engine honours: how to sample (:class:`SamplingConfig`) and what
comes back (:class:`Rollout`).

Rows are completions, G consecutive rows per prompt (problem-major); prompts are left-padded;
``completion_mask`` covers each row up to and including its first EOS or stop string; ``logprobs``
are the sampler's log-probabilities of the chosen tokens under ``softmax(logits / temperature)``.
The engines live beside this file: ``kv_cache`` (the built-in engine), ``static_cache`` (CUDA
graphs), ``latent`` (HRPO's latent mixing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor


@dataclass
class SamplingConfig:
    """How completions are sampled.

    Args:
        max_new_tokens: completion length limit; a completion that reaches it is ``truncated``.
        temperature: 0 means greedy.
        top_p / top_k / min_p: nucleus, top-k (0 = off) and min-p (0 = off) filtering.
        stop_strings: generation of a row stops once its text contains one of these (the stop
            string is kept in the completion, like EOS).
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    stop_strings: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Rollout:
    """What a rollout returns; rows are completions (G consecutive rows per prompt).

    ``logprobs`` are the sampling policy's log-probabilities of the chosen tokens under
    ``softmax(logits / temperature)`` (before top-p/top-k truncation, like the training forward).
    """

    prompt_ids: Tensor  # [B, P] left-padded
    prompt_mask: Tensor  # [B, P]
    completion_ids: Tensor  # [B, T] right-padded with pad_token_id
    completion_mask: Tensor  # [B, T] 1 up to and including the first EOS / stop string
    logprobs: Tensor  # [B, T] float32
    truncated: Tensor  # [B] bool: hit max_new_tokens without EOS / stop
    texts: list[str]
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. HRPO's latents and gate values

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum())

    @property
    def lengths(self) -> Tensor:
        return self.completion_mask.sum(-1)

    @property
    def context_mask(self) -> Tensor:
        """``[B, T]`` completion positions the model reads (its attention mask): ``completion_mask``,
        plus in a multi-turn episode the environment's tokens (``extras["episode_mask"]``), which
        are context, never loss."""
        return self.extras.get("episode_mask", self.completion_mask)

    def select(self, index: Tensor | slice) -> "Rollout":
        """The rows ``index`` (tensors and per-row extras sliced alike)."""
        pick = lambda t: t[index] if isinstance(t, Tensor) and t.dim() > 0 else t  # noqa: E731
        rows = range(len(self.texts))[index] if isinstance(index, slice) else index.tolist()
        return Rollout(
            pick(self.prompt_ids), pick(self.prompt_mask), pick(self.completion_ids), pick(self.completion_mask),
            pick(self.logprobs), pick(self.truncated), [self.texts[i] for i in rows], self.seconds,
            {k: pick(v) for k, v in self.extras.items()},
        )


def left_padded(rows: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[Tensor, Tensor]:
    """``(ids, mask)`` of token-id rows, left-padded with ``pad`` to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


def positions_from_mask(mask: Tensor) -> Tensor:
    """Position ids for a left-padded batch: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def end_of_sequence_ids(tokenizer, model, extra: Sequence[int] = ()) -> tuple[list[int], int]:
    """``(eos_ids, pad_id)`` every engine ends and pads completions with: the tokenizer's EOS, the
    model's ``generation_config`` EOS ids (chat models often add ``<|im_end|>`` there) and ``extra``;
    the pad id falls back to the first EOS (EOS == pad models mask by length, not by id)."""
    ids = set(extra)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    if not ids:
        raise ValueError("the tokenizer has no eos token: pass eos_token_ids= to the rollout engine")
    eos_ids = sorted(ids)
    return eos_ids, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
