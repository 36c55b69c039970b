"""Advantage estimators beside GRPO's group normalisation, as pure functions on ``[B]`` rewards.

Rows are G consecutive completions per prompt; NaN marks a missing reward (a reward function
returned None): it is left out of every mean and std and gets advantage 0, as in
:func:`lit_reason.algorithms.objectives.group_advantages`.

    grpo                    (r - mean_group) / scale            (objectives.group_advantages)
    rloo                    r - mean of the OTHER G-1 rewards   (RLOO; then optionally batch-whitened)
    reinforce_pp            whiten(r) over the batch            (REINFORCE++, outcome reward only)
    reinforce_pp_baseline   whiten(r - mean_group) over batch   (REINFORCE++ with a group baseline)

"Batch" is the rollout batch of this process (under DDP: this rank's), like ``scale_rewards: batch``.
The KL term stays a loss term (k3, ``beta``) for every estimator; RLOO and REINFORCE++ as published
put a KL penalty into the reward instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_reason.algorithms.objectives import group_advantages

ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")
#: the ``scale_rewards`` values each estimator accepts (None: the option is not used)
ESTIMATOR_SCALES = {"grpo": ("group", "batch", "none"), "rloo": ("batch", "none"), "reinforce_pp": None,
                    "reinforce_pp_baseline": None}


def _groups(rewards: Tensor, group_size: int) -> Tensor:
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.reshape(-1, group_size).double()


def _out(adv: Tensor, like: Tensor) -> Tensor:
    adv = torch.nan_to_num(adv, nan=0.0)
    return adv.reshape(like.shape).to(like.dtype if like.is_floating_point() else torch.float32)


def batch_whiten(values: Tensor, eps: float = 1e-4) -> Tensor:
    """``(x - mean) / (std + eps)`` over the non-NaN entries (Bessel std; one entry: std 0).
    NaN entries stay NaN."""
    x = values.double()
    present = x[~torch.isnan(x)]
    if present.numel() == 0:
        return x
    std = present.std() if present.numel() > 1 else present.new_zeros(())
    return (x - present.mean()) / (std + eps)


def rloo_advantages(rewards: Tensor, group_size: int, scale: str = "none", eps: float = 1e-4) -> Tensor:
    """Leave-one-out baseline: ``A_i = r_i - mean_{j != i} r_j`` over the group's present rewards.

    A group with fewer than two present rewards gets 0. ``scale``: ``none`` (the reference
    trainer's RLOO default) or ``batch`` (its ``normalize_advantages=True``: whiten the advantages
    over the batch).
    """
    if scale not in ("none", "batch"):
        raise ValueError(f"rloo: scale_rewards={scale!r}: choose none or batch")
    r = _groups(rewards, group_size)
    valid = ~torch.isnan(r)
    count = valid.sum(-1, keepdim=True)
    total = torch.where(valid, r, torch.zeros_like(r)).sum(-1, keepdim=True)
    baseline = (total - r) / (count - 1)  # NaN rows stay NaN; count 1 gives 0/0 = NaN -> advantage 0
    adv = torch.where(count > 1, r - baseline, torch.full_like(r, float("nan")))
    if scale == "batch":
        adv = batch_whiten(adv, eps)
    return _out(adv, rewards)


def reinforce_pp_advantages(rewards: Tensor, group_size: int, group_baseline: bool = False,
                            eps: float = 1e-4) -> Tensor:
    """REINFORCE++: the outcome reward whitened over the whole batch; with ``group_baseline`` the
    group mean is subtracted first (REINFORCE++-baseline), then the batch whitening."""
    r = _groups(rewards, group_size)
    if group_baseline:
        valid = ~torch.isnan(r)
        mean = torch.where(valid, r, torch.zeros_like(r)).sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp_min(1)
        r = r - mean
    return _out(batch_whiten(r, eps), rewards)


def estimate_advantages(rewards: Tensor, group_size: int, estimator: str = "grpo", scale: str = "group") -> Tensor:
    """``[B]`` advantages by ``estimator`` (see the module doc); ``scale`` is ``scale_rewards``."""
    if estimator == "grpo":
        return group_advantages(rewards, group_size, scale)
    if estimator == "rloo":
        return rloo_advantages(rewards, group_size, scale)
    if estimator in ("reinforce_pp", "reinforce_pp_baseline"):
        return reinforce_pp_advantages(rewards, group_size, group_baseline=estimator == "reinforce_pp_baseline")
    raise ValueError(f"advantage_estimator={estimator!r}: choose one of {ADVANTAGE_ESTIMATORS}")


def check_estimator(estimator: str, scale: str) -> str | None:
    """The one-line problem with ``(advantage_estimator, scale_rewards)``, or None when they fit."""
    if estimator not in ADVANTAGE_ESTIMATORS:
        return f"model.advantage_estimator={estimator!r}: choose one of {ADVANTAGE_ESTIMATORS}"
    allowed = ESTIMATOR_SCALES[estimator]
    if allowed is not None and scale not in allowed:
        if estimator == "rloo" and scale == "group":
            return ("model.advantage_estimator=rloo: set model.scale_rewards to none (RLOO as the reference trainer "
                    "runs it) or batch (its normalize_advantages); group would make it GRPO times G/(G-1)")
        return f"model.scale_rewards={scale!r} does not apply to advantage_estimator={estimator}: choose one of {allowed}"
    return None
