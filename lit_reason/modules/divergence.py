"""Divergence guard: an optimizer step fed a non-finite loss, gradient or reward is skipped (counted,
logged); ``max_bad_steps`` such steps in a row stop the run with one line (exit code 3); the collapse
signature (gradient norm exactly 0 while advantages are not, or the largest weight grown past
``weight_growth`` times its size at the run's first step) for
``collapse_steps`` steps in a row warns; non-finite weights after a step stop the run at once, before
any checkpoint of them is written (lit_reason.utils.atomic_checkpoint refuses them as well).

Why: with a learning rate far too high the weights blow up, the gradient norm overflows and clipping
turns every later gradient into exact zeros, so the run went on "training" a destroyed model, wrote
every checkpoint and exited 0. A reward of ``inf`` made NaN weights that overwrote the last good
checkpoint. A skipped step still counts as a step (``global_step``, the LR schedule and the sampling
seed advance, so the next rollout is a different draw): the optimizer sees no gradient at all
(``zero_grad(set_to_none=True)``), so neither the weights nor its moments move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_reason.utils.faults import TrainingDiverged


@dataclass
class DivergenceSettings:
    """``model.divergence``: when a run counts as diverged (docs/fault_tolerance.md)."""

    max_bad_steps: int = 3        # non-finite steps in a row that stop the run (0 = skip forever, never stop)
    collapse_steps: int = 5       # steps in a row with the collapse signature before the warning
    weight_growth: float = 10.0   # largest |weight| past this many times its first-step value: collapse (0 = off)


def nonfinite_problem(losses: Sequence[float], grad_norm: float, rewards: Tensor | None = None) -> str | None:
    """What is non-finite in one optimizer step, or None. Rewards may be NaN (a source abstained:
    left out of the advantages by design), never infinite."""
    if rewards is not None and bool(torch.isinf(rewards).any()):
        return f"reward {float(rewards[torch.isinf(rewards)][0])} on {int(torch.isinf(rewards).sum())} completion(s)"
    bad = [x for x in losses if not math.isfinite(x)]
    if bad:
        return f"loss {bad[0]}"
    if not math.isfinite(grad_norm):
        return f"gradient norm {grad_norm}"
    return None


def collapse_sign(grad_norm: float, advantages_nonzero: bool, max_abs_weight: float, first_max_abs_weight: float,
                  growth: float) -> str | None:
    """The collapse signature of one step, or None: gradient norm exactly 0 although some advantage
    is not (what clipping leaves of an overflowed norm), or the largest weight more than ``growth``
    times the largest at the first step (0 = no weight check)."""
    if grad_norm == 0.0 and advantages_nonzero:
        return "gradient norm exactly 0 although advantages are not"
    if growth and max_abs_weight > growth * first_max_abs_weight:
        return (f"largest |weight| {max_abs_weight:.3g}, more than model.divergence.weight_growth={growth:g} "
                f"times its first-step {first_max_abs_weight:.3g}")
    return None


def max_abs_weight(params: Sequence[Tensor]) -> Tensor:
    """Largest |w| over this rank's (local shard of) ``params``, NaN if any weight is NaN."""
    peaks = [getattr(p, "_local_tensor", p).detach().abs().amax().float() for p in params if p.numel()]
    if not peaks:
        return torch.zeros(())
    device = peaks[0].device
    peaks_t = torch.stack([x.to(device) for x in peaks])  # one host sync for the whole model, not one per tensor
    return torch.where(torch.isnan(peaks_t).any(), torch.full((), float("nan"), device=device), peaks_t.max()).cpu()


class DivergenceGuard:
    """Counts bad and collapsed steps of one module; ``allow_step`` before, ``after_step`` after each optimizer step."""

    def __init__(self, settings: DivergenceSettings) -> None:
        self.settings = settings
        self.bad_in_a_row = 0
        self.skipped_total = 0
        self.collapsed_in_a_row = 0
        self.first_max_abs_weight: float | None = None  # measured before the run's first step; checkpointed
        self.rewards: Tensor | None = None  # this rollout's rewards, seen by each of its optimizer steps

    def allow_step(self, module: Any, losses: Sequence[float], grad_norm: float) -> bool:
        """False (the step is skipped) if this step, on any rank, saw a non-finite value; raises
        ``TrainingDiverged`` at the ``max_bad_steps``-th in a row."""
        if self.first_max_abs_weight is None:
            self.first_max_abs_weight = self.max_abs_weight(module)
        problem = nonfinite_problem(losses, grad_norm, self.rewards)
        trainer = getattr(module, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:  # every rank skips the same steps
            anywhere = trainer.strategy.reduce_boolean_decision(problem is not None, all=False)
            problem = problem or ("a non-finite value on another rank" if anywhere else None)
        if problem is None:
            self.bad_in_a_row = 0
            return True
        self.bad_in_a_row += 1
        self.skipped_total += 1
        step = module.global_step + 1
        limit = self.settings.max_bad_steps
        if limit and self.bad_in_a_row >= limit:
            raise TrainingDiverged(
                f"training diverged: {self.bad_in_a_row} optimizer steps in a row had a non-finite value "
                f"(last, step {step}: {problem}); stopped with the last checkpoint intact: lower model.lr, "
                f"check the reward functions, or raise model.divergence.max_bad_steps")
        rank_zero_warn(f"step {step} skipped: non-finite {problem} ({self.bad_in_a_row} in a row; the run stops "
                    f"at {limit or 'never'}; {self.skipped_total} skipped in all)")
        return False

    def after_step(self, module: Any, grad_norm: float, advantages: Tensor) -> None:
        """Stop on non-finite weights; warn once per streak of ``collapse_steps`` collapsed steps."""
        peak_f = self.max_abs_weight(module)
        if not math.isfinite(peak_f):
            raise TrainingDiverged(
                f"training diverged: the weights became non-finite at step {module.global_step} (largest |w| "
                f"{peak_f}); stopped before saving them, the last checkpoint is intact: lower model.lr")
        sign = collapse_sign(grad_norm, bool(advantages.abs().max() > 0) if advantages.numel() else False,
                             peak_f, self.first_max_abs_weight or peak_f, self.settings.weight_growth)
        self.collapsed_in_a_row = self.collapsed_in_a_row + 1 if sign else 0
        if sign and self.collapsed_in_a_row == self.settings.collapse_steps:
            rank_zero_warn(f"possible collapse: {sign} for {self.collapsed_in_a_row} optimizer steps in a row "
                        f"(step {module.global_step}); the model may be destroyed: lower model.lr and resume "
                        "from an earlier checkpoint")

    @staticmethod
    def max_abs_weight(module: Any) -> float:
        """Largest |w| of the trainable parameters over all ranks."""
        peak = max_abs_weight([p for p in module.parameters() if p.requires_grad])
        trainer = getattr(module, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            peak = trainer.strategy.reduce(peak.to(module.device), reduce_op="max").cpu()
        return float(peak)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_total, "first_max_abs_weight": self.first_max_abs_weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_total = int(state.get("skipped_steps", 0))
        self.first_max_abs_weight = state.get("first_max_abs_weight", self.first_max_abs_weight)
