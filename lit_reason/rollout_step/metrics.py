"""What a scored rollout looks like, as the numbers a training step logs."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_reason.algorithms.objectives import zero_std_groups
from lit_reason.rollout import Rollout


def scored_rollout_metrics(rollout: Rollout, rewards: Tensor, group_size: int) -> dict[str, float]:
    """Reward spread within groups (``reward_std``: the mean over groups of the std of the rewards
    that are not NaN; ``frac_reward_zero_std``: groups that teach nothing), completion lengths,
    the share cut at ``max_new_tokens`` and the sampling speed."""
    grouped = rewards.reshape(-1, group_size)
    group_std = torch.stack([g[~torch.isnan(g)].std() if (~torch.isnan(g)).sum() > 1 else g.new_zeros(())
                             for g in grouped])
    lengths = rollout.lengths.float()
    return {
        "reward_std": float(group_std.mean()),
        "frac_reward_zero_std": float(zero_std_groups(rewards, group_size).float().mean()),
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(rollout.truncated.float().mean()),
        "rollout/tokens_per_s": rollout.num_tokens / max(rollout.seconds, 1e-9),
    }
