"""The HRPO rollout: the spine's KV-cached decode loop with latent-mixed inputs in the reasoning span.

Position bookkeeping (completion positions t = 0..T-1, token c_t sampled from logits z_t):
the input fed at position t is ``gate(e(c_t), h_t)`` with ``h_t = latent(z_t)`` while the decoded
text c_0..c_t does not yet contain the answer delimiter, else plain ``e(c_t)``. So the token that
completes the delimiter, and everything after it, goes in unmixed. ``Rollout.extras`` gets, per
completion position, the latent used for the INPUT at that position and whether it was mixed; the
training forward rebuilds the exact ``inputs_embeds`` from them (see ``HRPO.policy_logits``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from lit_reason.algorithms.hybrid import HybridGate, latent_from_logits
from lit_reason.rollout.contract import Rollout, SamplingConfig
from lit_reason.rollout.kv_cache import RolloutEngine
from lit_reason.rollout.stop_strings import StopStringMatcher

#: keys this engine adds to ``Rollout.extras`` (all ``[B, T, ...]``, aligned with completion_ids)
LATENTS, MIX, GATE, SHARE = "hybrid_latents", "hybrid_mask", "hybrid_gate", "hybrid_share"


class DelimiterTracker:
    """Per row: has the decoded completion reached ``delimiter`` yet? Checked on a bounded tail of
    tokens each step, and only for rows whose newest token could complete it (the spine's
    :class:`StopStringMatcher`, one batched decode); one host sync per step."""

    def __init__(self, tokenizer, delimiter: str | None, batch_size: int, device: torch.device) -> None:
        self.tokenizer, self.delimiter = tokenizer, delimiter or None
        self.matcher = StopStringMatcher(tokenizer, [delimiter] if delimiter else [])
        self.window = self.matcher.window if delimiter else 0
        self.history: list[list[int]] = [[] for _ in range(batch_size)]
        self.open = [True] * batch_size  # host copy of ``reasoning``
        self.reasoning = torch.ones(batch_size, dtype=torch.bool, device=device)

    def update(self, tokens: Tensor, rows: Tensor | None = None) -> Tensor:
        """Append ``tokens`` (one per entry of ``rows``, default: every row); returns whether each of
        those rows is still in the reasoning span after its token."""
        rows = torch.arange(len(self.history), device=tokens.device) if rows is None else rows
        if self.delimiter is not None:
            # the one host sync of the step: row indices, tokens and whether each may end the delimiter
            both = torch.stack([rows, tokens, self.matcher.may_complete(tokens).long()]).tolist()
            check = []
            for row, token, may in zip(*both):
                if self.open[row]:
                    self.history[row].append(token)
                    if may:
                        check.append(row)
            ended = [row for row, hit in zip(check, self.matcher.found([self.history[r] for r in check])) if hit]
            if ended:  # once per row and rollout at most
                for row in ended:
                    self.open[row] = False
                self.reasoning[torch.tensor(ended, device=self.reasoning.device)] = False
        return self.reasoning[rows]


class HybridRolloutEngine(RolloutEngine):
    """Samples like :class:`RolloutEngine`; the input after each sampled token is latent-mixed.

    Args:
        gate: the :class:`HybridGate` (read at every step, so it always has the current parameters).
        tau: temperature of the latent distribution ``p = softmax(logits / tau)``.
        delimiter: text that ends the reasoning span (``####`` in the paper); ``""`` or None mixes the
            whole completion.
    """

    def __init__(self, model, tokenizer, config: SamplingConfig, gate: HybridGate, tau: float = 0.5,
                 delimiter: str | None = "####", eos_token_ids: Sequence[int] = ()) -> None:
        super().__init__(model, tokenizer, config, eos_token_ids)
        if tau <= 0:
            raise ValueError(f"model.tau must be > 0 (latent temperature), got {tau}")
        self.gate, self.tau, self.delimiter = gate, float(tau), delimiter

    #: finished rows leave the batch (the spine's compaction); per-row state is indexed by ``state["active"]``
    compact_finished_rows = True

    def begin(self, batch_size: int, state: dict) -> None:
        device = self.model.get_input_embeddings().weight.device
        state["tracker"] = DelimiterTracker(self.tokenizer, self.delimiter, batch_size, device)
        state["batch_size"] = batch_size
        for key in (LATENTS, MIX, GATE, SHARE):
            state[key] = []

    def next_inputs_embeds(self, tokens: Tensor, logits: Tensor, step: int, state: dict) -> Tensor:
        table = self.model.get_input_embeddings()
        rows = state.get("active")  # full-batch index of each row still decoding
        if rows is None:
            rows = torch.arange(tokens.shape[0], device=tokens.device)
        mix = state["tracker"].update(tokens, rows)
        e = table(tokens)  # [b, H]
        # stored in the embedding dtype and mixed from that stored copy, so training rebuilds it exactly
        h = latent_from_logits(logits, table.weight, self.tau).to(e.dtype)
        inputs, a = self.gate(e, h, mix)
        share = torch.sqrt((1.0 - a.double() ** 2).clamp_min(0.0)).float()
        batch = state["batch_size"]
        for key, value, fill in ((LATENTS, h, 0.0), (MIX, mix, False), (GATE, a.mean(-1), 1.0), (SHARE, share.mean(-1), 0.0)):
            full = torch.full((batch, *value.shape[1:]), fill, dtype=value.dtype, device=value.device)
            full[rows] = value
            state[key].append(full)
        return inputs[:, None]

    def finish(self, rollout: Rollout, state: dict) -> None:
        """Stack the per-step state into ``[B, T, ...]`` extras. A completion's last token is never fed
        back (the row leaves the batch, or decoding stops), so it and the padding after it are unmixed."""
        batch, steps = rollout.completion_ids.shape
        hidden = self.model.get_input_embeddings().weight.shape[1]
        device = rollout.completion_ids.device
        dtype = self.model.get_input_embeddings().weight.dtype
        latents = torch.zeros(batch, steps, hidden, dtype=dtype, device=device)
        mix = torch.zeros(batch, steps, dtype=torch.bool, device=device)
        gate = torch.ones(batch, steps, dtype=torch.float32, device=device)
        share = torch.zeros(batch, steps, dtype=torch.float32, device=device)
        fed = len(state[LATENTS])  # = steps - 1: no input is formed after the last sampled token
        if fed:
            latents[:, :fed] = torch.stack(state[LATENTS], 1)
            mix[:, :fed] = torch.stack(state[MIX], 1)
            gate[:, :fed] = torch.stack(state[GATE], 1)
            share[:, :fed] = torch.stack(state[SHARE], 1)
        real = rollout.completion_mask.bool()
        mix &= real
        gate = torch.where(mix, gate, torch.ones_like(gate))
        share = torch.where(mix, share, torch.zeros_like(share))
        rollout.extras.update({LATENTS: latents, MIX: mix, GATE: gate, SHARE: share})
