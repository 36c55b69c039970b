"""Rollout-mismatch correction: truncated importance sampling between sampler and trainer.

The engine that sampled a completion (vLLM, a bf16 static-cache engine, a policy one sync behind)
scores its tokens slightly differently from the trainer's forward. The policy gradient wants
expectations under the trainer's old policy, so each token's loss is reweighted by

    r_t = pi_trainer_old(y_t) / pi_sampler(y_t)            (``level="token"``)
    r   = prod_t r_t  for every token of the sequence       (``level="sequence"``)

and large ratios are tamed: ``mode="truncate"`` clamps ``r`` into ``[floor, cap]``;
``mode="mask"`` gives weight 0 to tokens (or whole sequences) whose ratio lies outside it. These
are the four modes of the reference trainer's ``vllm_importance_sampling_correction``; verl calls
the same thing rollout importance sampling / rejection sampling. Pure functions, no module state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LEVELS = ("token", "sequence")
MODES = ("truncate", "mask")


@dataclass
class RolloutCorrection:
    """YAML ``model.rollout_correction: {level: token, mode: truncate, cap: 2.0}``.

    Args:
        level: ``token`` (one ratio per token) or ``sequence`` (the product over the completion).
        mode: ``truncate`` (clamp the ratio into ``[floor, cap]``) or ``mask`` (weight 0 outside it).
        cap: upper bound of the ratio, >= 1.
        floor: lower bound, <= 1; None means no lower bound (truncation only from above, like the
            reference trainer's default).
    """

    level: str = "token"
    mode: str = "truncate"
    cap: float = 2.0
    floor: float | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"model.rollout_correction.level={self.level!r}: choose one of {LEVELS}")
        if self.mode not in MODES:
            raise ValueError(f"model.rollout_correction.mode={self.mode!r}: choose one of {MODES}")
        if not self.cap >= 1.0:
            raise ValueError(f"model.rollout_correction.cap must be >= 1 (got {self.cap}): a ratio of 1 must pass")
        if self.floor is not None and not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"model.rollout_correction.floor must be in [0, 1] (got {self.floor})")


def log_ratios(trainer_logps: Tensor, sampler_logps: Tensor, mask: Tensor, level: str = "token") -> Tensor:
    """``log r`` per token ``[B, T]`` (0 on padding and where the sampler gave NaN); at sequence
    level every token of a row carries the row's summed log-ratio."""
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: choose one of {LEVELS}")
    diff = (trainer_logps.float() - sampler_logps.float()) * mask.float()
    diff = torch.nan_to_num(diff, nan=0.0)
    if level == "sequence":
        diff = diff.sum(-1, keepdim=True).expand_as(diff)
    return diff


def importance_weights(trainer_logps: Tensor, sampler_logps: Tensor, mask: Tensor, level: str = "token",
                       mode: str = "truncate", cap: float = 2.0, floor: float | None = None) -> tuple[Tensor, Tensor]:
    """Per-token loss weights ``[B, T]`` (detached) and a bool ``[B, T]`` of the tokens whose
    ratio was changed (truncated or masked). Works in log space, so a sequence ratio of e^300 is
    handled without overflow. Padding gets weight 1 (the loss mask removes it anyway)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    log_r = log_ratios(trainer_logps.detach(), sampler_logps.detach(), mask, level)
    log_cap = math.log(cap)
    log_floor = math.log(floor) if floor else float("-inf")
    outside = (log_r > log_cap) | (log_r < log_floor)
    if mode == "truncate":
        weights = torch.exp(log_r.clamp(min=log_floor, max=log_cap))
    else:
        weights = torch.where(outside, torch.zeros_like(log_r), torch.exp(log_r))
    return weights, outside & mask.bool()


def mismatch_metrics(trainer_logps: Tensor, sampler_logps: Tensor, mask: Tensor, changed: Tensor | None = None,
                     weights: Tensor | None = None) -> dict[str, float]:
    """How far sampler and trainer disagree on the sampled tokens.

    ``kl_mean`` / ``kl_max``: the per-token k3 estimate of KL(sampler || trainer) on tokens drawn
    from the sampler, ``(r - 1) - log r`` with ``r = pi_trainer / pi_sampler`` (>= 0, 0 iff equal);
    ``logp_diff_mean`` / ``logp_diff_max``: ``|log pi_trainer - log pi_sampler|``;
    ``corrected_share``: share of tokens whose ratio was truncated or masked; ``weight_mean``.
    """
    real = mask.bool()
    diff = torch.nan_to_num(trainer_logps.float() - sampler_logps.float(), nan=0.0)[real]
    if diff.numel() == 0:
        return {"kl_mean": 0.0, "kl_max": 0.0, "logp_diff_mean": 0.0, "logp_diff_max": 0.0, "corrected_share": 0.0,
                "weight_mean": 1.0}
    k3 = torch.expm1(diff) - diff
    out = {
        "kl_mean": float(k3.mean()), "kl_max": float(k3.max()),
        "logp_diff_mean": float(diff.abs().mean()), "logp_diff_max": float(diff.abs().max()),
        "corrected_share": float(changed[real].float().mean()) if changed is not None else 0.0,
        "weight_mean": float(weights[real].float().mean()) if weights is not None else 1.0,
    }
    return out


def correct_rollout(trainer_logps: Tensor, sampler_logps: Tensor, mask: Tensor,
                    config: RolloutCorrection) -> tuple[Tensor, dict[str, float]]:
    """Weights and ``rollout_correction/*`` metrics for one rollout under ``config``."""
    weights, changed = importance_weights(trainer_logps, sampler_logps, mask, config.level, config.mode, config.cap,
                                          config.floor)
    metrics = mismatch_metrics(trainer_logps, sampler_logps, mask, changed, weights)
    return weights, {f"rollout_correction/{k}": v for k, v in metrics.items()}
