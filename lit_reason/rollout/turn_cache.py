"""The KV cache of a batch of multi-turn episodes, kept from one turn to the next.

After a turn the built-in engine (:meth:`~lit_reason.rollout.kv_cache.RolloutEngine.generate_turn`)
returns a :class:`TurnCache`: one cache row per episode, holding its tokens so far. The next turn
prefills only what was appended since (the environment's turn, and the last sampled token, which
was never fed) at the positions that follow, instead of the whole episode again.

Rows that end their turn early leave the model batch as in a single-turn rollout (so the batch
shrinks as rows finish); :class:`FinishedRows` keeps their cache aside and puts it back at the
turn's end, right-padded to the longest row (the padding masked out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor


@dataclass
class TurnCache:
    """What a batch of episodes leaves in the KV cache after a turn, for the next one.

    ``cache`` holds one row per episode, ``attention`` ``[B, L]`` (L = the cache's length) is 1 where
    a row's cached position holds one of its tokens (0 at its left padding, at the padding of a
    prefilled chunk, and after its turn ended while longer rows still decoded), ``fed`` ``[B]``
    counts the tokens of each row the cache holds: the position id of its next token."""

    cache: Any
    attention: Tensor
    fed: Tensor

    def select(self, rows: Sequence[int]) -> "TurnCache":
        """Only these rows (the episodes still playing), in this order."""
        if list(rows) == list(range(len(self.fed))):
            return self
        index = torch.tensor(list(rows), dtype=torch.long, device=self.attention.device)
        self.cache.batch_select_indices(index)
        return TurnCache(self.cache, self.attention[index], self.fed[index])


class FinishedRows:
    """The cache rows of finished rows, kept aside while the rest of the batch decodes on."""

    def __init__(self) -> None:
        self.parts: list[tuple[Tensor, list[tuple[Tensor, Tensor]]]] = []

    @staticmethod
    def can_keep(cache: Any) -> bool:
        """A cache whose rows can be set aside and put back: every layer a plain growing
        ``DynamicLayer`` (keys / values ``[B, heads, L, head_dim]``); not sliding-window or quantized ones."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def keep(self, cache: Any, local: Tensor, rows: Tensor) -> None:
        """Set aside the cache rows ``local`` (of the model batch), which are the batch rows ``rows``."""
        self.parts.append((rows, [(layer.keys[local], layer.values[local]) for layer in cache.layers]))

    def rejoin(self, cache: Any, active: Tensor, batch: int) -> None:
        """Put every kept row back: the cache has ``batch`` rows again, ``active`` where the model batch was."""
        if not self.parts:
            return
        for i, layer in enumerate(cache.layers):
            keys = layer.keys.new_zeros((batch,) + tuple(layer.keys.shape[1:]))
            values = layer.values.new_zeros((batch,) + tuple(layer.values.shape[1:]))
            keys[active], values[active] = layer.keys, layer.values
            for rows, kept in self.parts:
                k, v = kept[i]
                keys[rows, :, : k.shape[2]], values[rows, :, : v.shape[2]] = k, v
            layer.keys, layer.values = keys, values
        self.parts = []
