"""Review findings 8(a), 8(b), 8(d) of issue 29, pinned by hand-computed numbers (8(c) is in
tests/test_rollout_step.py). docs/algorithms.md and docs/lr_schedule.md say the same."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_reason.algorithms import objectives as obj
from lit_reason.utils.optim import build_scheduler, lr_multiplier


def _policy_gradient(loss_type: str, logps: Tensor, advantages, mask, max_len):
    logps = logps.clone().requires_grad_(True)
    loss, _ = obj.policy_loss(logps, logps.detach(), advantages, mask, loss_type=loss_type,
                              max_completion_length=max_len,
                              normalizer=obj.loss_normalizer(mask, loss_type, max_len))
    loss.backward()
    return logps.grad



def test_rloo_reference_gradient_is_loss_type_dr_grpo():
    """8(b): the RLOO paper and the reference RLOO trainer weigh each completion's summed log-prob by
    its advantage (no division by its length). ``loss_type: dr_grpo`` divides by the constant
    num_sequences x max_new_tokens, so its gradient is that one scaled (cosine 1); the default
    ``grpo`` divides each completion by its own length (cosine < 1 when lengths differ)."""
    torch.manual_seed(0)
    logps = -torch.rand(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    adv = torch.tensor([1.0, -0.5, -0.5])
    reference = -(adv[:, None] * mask) / 3  # d/dlogp of -mean_i A_i sum_t logp_it
    dr = _policy_gradient("dr_grpo", logps, adv, mask, 5)
    grpo = _policy_gradient("grpo", logps, adv, mask, 5)
    assert torch.allclose(dr, reference / 5, atol=1e-7)
    cos = torch.nn.functional.cosine_similarity(grpo.flatten(), reference.flatten(), dim=0)
    # by hand: grpo's gradient is -A_i / (3 len_i) per counted token
    assert torch.allclose(grpo, -(adv[:, None] * mask) / (3 * mask.sum(1, keepdim=True)), atol=1e-7)
    assert float(cos) < 0.99


def test_warmup_starts_at_one_over_warmup_and_warmup_ratio_rounds_to_nearest():
    """8(d), documented rather than changed (changing it would move every existing run's LR): the
    first step's LR is 1/warmup of the peak (transformers: 0), and warmup_ratio x steps is rounded
    to the nearest step (transformers: up)."""
    assert [lr_multiplier(s, 10, 4, "constant") for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, "constant", total_steps=10, warmup_ratio=0.12)  # 1.2 steps -> 1 (transformers: 2)
    assert opt.param_groups[0]["lr"] == 1.0 and sched.base_lrs == [1.0]
    sched = build_scheduler(opt, "constant", total_steps=10, warmup_ratio=0.25)  # 2.5 -> 2 (round half to even)
    assert opt.param_groups[0]["lr"] == 0.5
