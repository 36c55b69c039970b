"""A Hugging Face causal LM seen as ``head(backbone(...))``: what the chunked LM-head statistics
(:mod:`lit_reason.algorithms.lm_head`) need from a model, and what one forward over a rollout yields.

:func:`split_causal_lm` finds the backbone and the head so callers can run the model without its
head; anything it does not recognise falls back to full logits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from torch import Tensor, nn


@dataclass
class CompletionScores:
    """What the GRPO-family losses read from one forward over a rollout.

    logps ``[B, T]`` (log-prob of each completion token under ``softmax(z / T)``), entropy ``[B, T]``
    and certainty ``[B]`` (Intuitor's per-completion self-certainty) when asked for, the final
    hidden states ``[B, T, H]`` when asked for. The full-logits path also gives ``logits``
    ``[B, T, V]`` (``z / T``); the chunked path gives ``lse`` ``[B, T]`` (``logsumexp(z / T)``) and the
    ``head`` instead, from which a few columns' probabilities are cheap
    (:func:`restricted_probs_from_head`). In the chunked path every ``[B, T]`` value is 0 outside
    ``completion_mask``.
    """

    logps: Tensor
    entropy: Tensor | None = None
    certainty: Tensor | None = None
    hidden: Tensor | None = None
    logits: Tensor | None = None
    lse: Tensor | None = None
    head: nn.Linear | None = None


def adapter_base(model) -> nn.Module:
    """The module whose backbone and head to use: a LoRA reference (``lit_reason.models.lora.AdaptersOff``,
    the policy called with its adapters off) is split through the policy it wraps."""
    from lit_reason.models.lora import AdaptersOff

    return model.policy if isinstance(model, AdaptersOff) else model


@contextlib.contextmanager
def adapters_off(model) -> Iterator[None]:
    """For a LoRA reference, run the backbone as ``AdaptersOff`` runs the whole model: adapters
    disabled, eval mode. A no-op for any other model."""
    base = adapter_base(model)
    if base is model:
        yield
        return
    was_training = base.training
    base.eval()
    try:
        with base.disable_adapter():
            yield
    finally:
        base.train(was_training)


@dataclass
class SplitLM:
    """A causal LM seen as ``head(backbone(...).last_hidden_state)``."""

    backbone: nn.Module
    head: nn.Linear


def split_causal_lm(model: nn.Module) -> SplitLM | None:
    """The backbone (``get_decoder()``) and a plain ``nn.Linear`` output head of ``model``, or None
    when either is missing, the head is anything else (quantized, FP4, LoRA-wrapped) or its weight
    is sharded: those keep the full-logits path, since reading their ``weight`` would bypass what
    their forward computes or gathers."""
    get_head, get_decoder = getattr(model, "get_output_embeddings", None), getattr(model, "get_decoder", None)
    if get_head is None or get_decoder is None:
        return None
    try:
        head, backbone = get_head(), get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if type(head) is not nn.Linear or backbone is None or backbone is model:
        return None
    if hasattr(head.weight, "ds_id") or type(head.weight).__name__ == "DTensor":
        return None  # sharded (DeepSpeed ZeRO-3 / FSDP2): only the head's own forward gathers it
    return SplitLM(backbone, head)


def final_hidden_states(split: SplitLM, **inputs) -> Tensor:
    """``[B, S, H]``: what the head would be applied to (the backbone's last, normalised states)."""
    return split.backbone(**inputs, use_cache=False).last_hidden_state
