"""GateMonitor: how much latent HRPO's rollouts actually mix in, per training step.

Analysis callback. It reads the per-position extras the hybrid rollout stores
(:mod:`lit_reason.rollout.latent`) from the ``rollout`` that ``training_step`` returns, and logs:

    gate/a_mean             mean gate value a over mixed inputs (1 = pure token embeddings)
    gate/latent_share       mean sqrt(1 - a^2) over mixed inputs (the latent's weight)
    gate/reasoning_frac     share of completion tokens whose input was mixed (the reasoning span;
                            a completion's last token is never fed back, so never counted)
    gate/completion_length  mean completion length in tokens
    gate/a0_mean            mean exp(-c * softplus(Lambda)), the gate's floor: where Lambda has moved
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback
from torch import Tensor

from lit_reason.rollout.latent import GATE, MIX, SHARE


def gate_metrics(completion_mask: Tensor, mix: Tensor, gate: Tensor, share: Tensor) -> dict[str, float]:
    """The monitor's numbers from ``[B, T]`` tensors (mix: bool; gate/share: per-position means over H)."""
    mixed = mix.bool() & completion_mask.bool()
    n_mixed = int(mixed.sum())
    n_tokens = int(completion_mask.sum())
    return {
        "gate/a_mean": float(gate[mixed].mean()) if n_mixed else 1.0,
        "gate/latent_share": float(share[mixed].mean()) if n_mixed else 0.0,
        "gate/reasoning_frac": n_mixed / max(n_tokens, 1),
        "gate/completion_length": float(completion_mask.sum(-1).float().mean()),
    }


class GateMonitor(Callback):
    """Log the HRPO gate statistics of every ``every_n_steps``-th training rollout."""

    def __init__(self, every_n_steps: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError(f"GateMonitor.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        rollout = outputs.get("rollout") if isinstance(outputs, dict) else None
        if rollout is None or MIX not in rollout.extras or trainer.global_step % self.every_n_steps:
            return
        x = rollout.extras
        metrics = gate_metrics(rollout.completion_mask, x[MIX], x[GATE], x[SHARE])
        gate_module = getattr(pl_module, "gate", None)
        if gate_module is not None:
            with torch.no_grad():
                a0 = torch.exp(-gate_module.c * torch.nn.functional.softplus(gate_module.Lambda.float()))
            metrics["gate/a0_mean"] = float(a0.mean())
        pl_module.log_dict(metrics, batch_size=len(rollout.texts))
