"""Optimizers and learning-rate schedules selectable by name from YAML.

``adamw`` is torch's; ``adamw8bit`` and ``paged_adamw8bit`` are bitsandbytes' 8-bit optimizers
(optimizer state in 8 bits: about a quarter of AdamW's state memory).
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw8bit", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


def build_optimizer(param_groups: list[dict], name: str = "adamw", lr: float = 1e-6, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """An optimizer over ``param_groups`` (groups may carry their own lr / weight_decay)."""
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, weight_decay=weight_decay)
    if name in ("adamw8bit", "paged_adamw8bit"):
        import bitsandbytes as bnb

        cls = bnb.optim.AdamW8bit if name == "adamw8bit" else bnb.optim.PagedAdamW8bit
        return cls(param_groups, lr=lr, weight_decay=weight_decay, betas=betas)
    raise ValueError(f"model.optimizer={name!r}: choose one of {OPTIMIZERS}")


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Linear warmup to 1, then constant / cosine to 0 / linear to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"model.lr_schedule={schedule!r}: choose one of {SCHEDULES}")


def optimizer_steps_per_rollout(rows: int, num_iterations: int, minibatch_size: int | None) -> int:
    """Optimizer steps GRPO takes per rollout: ``num_iterations`` passes, each one step per
    minibatch of ``minibatch_size`` rows (the whole rollout when None)."""
    minibatches = 1 if not minibatch_size else math.ceil(rows / minibatch_size)
    return num_iterations * minibatches


def run_optimizer_steps(steps_per_rollout: int, max_steps: int, max_rollouts: float) -> float:
    """Optimizer steps a run takes. Lightning counts ``trainer.max_steps`` in optimizer steps
    (``global_step`` under manual optimization) but only checks it between batches, so the run
    stops after the first rollout at which ``global_step >= max_steps``: ``ceil(max_steps / k)``
    rollouts of ``k`` steps, or ``max_rollouts`` (epochs x batches) if fewer. ``inf`` when unbounded."""
    rollouts = max_rollouts
    if max_steps is not None and max_steps >= 0:
        rollouts = min(rollouts, math.ceil(max_steps / steps_per_rollout))
    return rollouts * steps_per_rollout


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_steps: int = 0,
                    warmup_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule not in SCHEDULES:
        raise ValueError(f"model.lr_schedule={schedule!r}: choose one of {SCHEDULES}")
    warmup = warmup_steps or int(round(warmup_ratio * total_steps))
    return ConfiguredLambdaLR(optimizer, lambda s: lr_multiplier(s, total_steps, warmup, schedule))


class ConfiguredLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """A LambdaLR that keeps the base LRs it was built with (the config's) when a checkpoint loads:
    the saved step count resumes, and a changed ``model.lr`` applies from the first resumed step
    (new base LR x the schedule at the saved step) instead of being overwritten by the saved one."""

    def load_state_dict(self, state_dict: dict) -> None:
        base_lrs = list(self.base_lrs)
        super().load_state_dict(state_dict)
        self.base_lrs = base_lrs
        self._last_lr = [base * fn(self.last_epoch) for base, fn in zip(base_lrs, self.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr
