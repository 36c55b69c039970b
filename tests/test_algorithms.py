"""GSPO, CISPO, RLOO, REINFORCE++ and high-entropy token selection against numbers worked out by hand."""

import math

import pytest
import torch

from lit_reason.algorithms import advantages as adv
from lit_reason.algorithms import objectives as obj

NAN = float("nan")


# --------------------------------------------------------------------------- RLOO
def test_rloo_by_hand():
    # group [1, 0, .5]: baselines mean(0, .5) = .25, mean(1, .5) = .75, mean(1, 0) = .5
    # group [2, 2, 2]: every baseline 2 -> 0
    a = adv.rloo_advantages(torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, 2.0]), 3)
    assert a.tolist() == pytest.approx([0.75, -0.75, 0.0, 0.0, 0.0, 0.0])


def test_rloo_is_grpo_centred_times_g_over_g_minus_1():
    r = torch.tensor([0.3, 0.9, 0.1, 0.4, 1.0, 0.0, 0.0, 0.2])
    centred = obj.group_advantages(r, 4, scale="none")
    torch.testing.assert_close(adv.rloo_advantages(r, 4), centred * 4 / 3)


def test_rloo_missing_rewards_leave_the_baseline_and_a_lone_reward_gets_zero():
    # [1, nan, 0]: baselines over the present siblings only: 1 - 0 = 1, 0 - 1 = -1; [1, nan, nan]: one present -> 0
    a = adv.rloo_advantages(torch.tensor([1.0, NAN, 0.0, 1.0, NAN, NAN]), 3)
    assert a.tolist() == pytest.approx([1.0, 0.0, -1.0, 0.0, 0.0, 0.0])


def test_rloo_batch_scale_whitens_the_advantages():
    # advantages [.75, -.75, 0, 0, 0, 0]: mean 0, Bessel std sqrt(2 * .5625 / 5) = .474342
    a = adv.rloo_advantages(torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, 2.0]), 3, scale="batch")
    s = math.sqrt(2 * 0.5625 / 5) + 1e-4
    assert a.tolist() == pytest.approx([0.75 / s, -0.75 / s, 0, 0, 0, 0], abs=1e-6)


# --------------------------------------------------------------------------- REINFORCE++
def test_reinforce_pp_by_hand():
    # [1, 0, 1, 1]: batch mean .75, Bessel std sqrt((3 * .0625 + .5625) / 3) = .5
    a = adv.reinforce_pp_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2)
    assert a.tolist() == pytest.approx([0.25 / 0.5001, -0.75 / 0.5001, 0.25 / 0.5001, 0.25 / 0.5001], abs=1e-6)


def test_reinforce_pp_baseline_by_hand():
    # group means .5 and 1 -> [.5, -.5, 0, 0]; mean 0, std sqrt(.5 / 3) = .408248
    a = adv.reinforce_pp_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2, group_baseline=True)
    s = math.sqrt(0.5 / 3) + 1e-4
    assert a.tolist() == pytest.approx([0.5 / s, -0.5 / s, 0.0, 0.0], abs=1e-6)


def test_reinforce_pp_missing_reward_is_left_out_and_gets_zero():
    # present [1, 0, 1]: mean 2/3, std sqrt((1/9 + 4/9 + 1/9) / 2) = .57735
    a = adv.reinforce_pp_advantages(torch.tensor([1.0, 0.0, NAN, 1.0]), 2)
    s = math.sqrt((1 / 9 + 4 / 9 + 1 / 9) / 2) + 1e-4
    assert a.tolist() == pytest.approx([(1 / 3) / s, (-2 / 3) / s, 0.0, (1 / 3) / s], abs=1e-6)


def test_estimator_dispatch_and_config_check():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5])
    torch.testing.assert_close(adv.estimate_advantages(r, 2, "grpo", "group"), obj.group_advantages(r, 2))
    torch.testing.assert_close(adv.estimate_advantages(r, 2, "rloo", "none"), adv.rloo_advantages(r, 2))
    assert adv.check_estimator("grpo", "group") is None and adv.check_estimator("reinforce_pp", "group") is None
    assert "scale_rewards to none" in adv.check_estimator("rloo", "group")
    assert "choose one of" in adv.check_estimator("ppo", "group")
    with pytest.raises(ValueError, match="advantage_estimator"):
        adv.estimate_advantages(r, 2, "ppo")


# --------------------------------------------------------------------------- GSPO
def test_gspo_sequence_ratio_clip_and_gradient_by_hand():
    # seq 0: log-ratios [.2, .4] -> mean .3, rho = e^.3 = 1.34986 > 1.2, A = 1 -> clipped: -1.2, no gradient
    # seq 1: log-ratios [-.1, (.5 masked)] -> rho = e^-.1 = .904837, A = -1 -> loss +.904837, unclipped
    old = torch.zeros(2, 2)
    logps = torch.tensor([[0.2, 0.4], [-0.1, 0.5]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, m = obj.policy_loss(logps, old, torch.tensor([1.0, -1.0]), mask, importance_sampling_level="sequence")
    assert loss.item() == pytest.approx((-1.2 + math.exp(-0.1)) / 2, abs=1e-6)
    loss.backward()
    # d/dlogp_{1,0} of rho / 2 with rho = exp(logp_{1,0} / 1) -> rho / 2; everything else 0
    assert logps.grad.flatten().tolist() == pytest.approx([0.0, 0.0, math.exp(-0.1) / 2, 0.0], abs=1e-6)
    # the clip ratio counts sequences: 1 of 2 clipped high
    assert m["clip_ratio/high_mean"].item() == pytest.approx(0.5) and m["clip_ratio/low_mean"].item() == 0.0


def test_gspo_equals_grpo_on_policy_in_value_and_gradient():
    """Ratio 1 (mu = 1): the sequence ratio's gradient is the token-mean of the token ratios' gradients."""
    gen = torch.Generator().manual_seed(0)
    base = -torch.rand(3, 5, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float64)
    a = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    for loss_type in ("grpo", "bnpo", "dr_grpo"):
        grads = []
        for level in ("token", "sequence"):
            x = base.clone().requires_grad_()
            loss, _ = obj.policy_loss(x, x.detach(), a, mask, loss_type=loss_type, importance_sampling_level=level,
                                      max_completion_length=5)
            loss.backward()
            grads.append((loss.detach(), x.grad))
        torch.testing.assert_close(grads[0][0], grads[1][0])
        torch.testing.assert_close(grads[0][1], grads[1][1])


# --------------------------------------------------------------------------- CISPO
def test_cispo_by_hand():
    # rho = [e^.5, e^-1.5] = [1.6487, .2231]; capped at 1.5 -> [1.5, .2231]; A = 2
    # per token -w * A * logp = [-1.5 * 2 * -1, -.2231 * 2 * -2] = [3, .8925]; / 2 tokens
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -0.5]])
    loss, m = obj.policy_loss(logps, old, torch.tensor([2.0]), torch.ones(1, 2), loss_type="cispo", eps_high=1.5)
    w1 = math.exp(-1.5)
    assert loss.item() == pytest.approx((3.0 + w1 * 4.0) / 2, abs=1e-6)
    loss.backward()
    # stop-gradient weight: d/dlogp = -w * A / 2 (nothing through the ratio, nothing clipped to zero)
    assert logps.grad.flatten().tolist() == pytest.approx([-1.5, -w1], abs=1e-6)
    assert m["cispo_clip_ratio"].item() == pytest.approx(0.5)


def test_cispo_needs_eps_high_and_divides_like_dapo():
    with pytest.raises(ValueError, match="eps_high"):
        obj.policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), loss_type="cispo")
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert obj.loss_normalizer(mask, "cispo") == obj.loss_normalizer(mask, "dapo") == 5.0


# --------------------------------------------------------------------------- high-entropy tokens
ENT = torch.tensor([[0.1, 0.5, 0.9, 0.3], [0.7, 0.2, 9.0, 0.0]])
EMASK = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])


def test_high_entropy_mask_by_hand():
    # counted entropies sorted [.1 .2 .3 .5 .7 .9]; the .5 quantile: position 2.5 -> .3 + .5 * .2 = .4
    keep = obj.high_entropy_mask(ENT, EMASK, 0.5)
    assert keep.tolist() == [[False, True, True, False], [True, False, False, False]]  # the masked 9.0 never counts
    assert obj.high_entropy_mask(ENT, EMASK, 1.0).tolist() == EMASK.bool().tolist()  # threshold = min
    assert obj.high_entropy_mask(ENT, EMASK, 0.0).sum() == 1 and obj.high_entropy_mask(ENT, EMASK, 0.0)[0, 2]


def test_high_entropy_mask_uses_the_given_pool_and_matches_torch_quantile():
    pool = torch.tensor([0.0, 0.6, 0.7, 1.0])  # e.g. other ranks' tokens: .5 quantile .65
    assert obj.high_entropy_mask(ENT, EMASK, 0.5, pool=pool).tolist() == [[False, False, True, False], [True, False, False, False]]
    x = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    for q in (0.0, 0.13, 0.5, 0.8, 1.0):
        assert obj.linear_quantile(x, q).item() == pytest.approx(torch.quantile(x, q).item(), abs=1e-7)
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        obj.high_entropy_mask(ENT, EMASK, 1.5)


def test_selection_as_token_weights_leaves_the_kl_on_every_token():
    """The selection weights the policy term only: with ratio 1 and A = 0 the loss is the full KL."""
    logps, ref = torch.full((2, 4), -1.0), torch.full((2, 4), -1.5)
    keep = obj.high_entropy_mask(ENT, EMASK, 0.5).float()
    full, _ = obj.policy_loss(logps, logps, torch.zeros(2), EMASK, loss_type="bnpo", ref_logps=ref, beta=0.1)
    sel, _ = obj.policy_loss(logps, logps, torch.zeros(2), EMASK, loss_type="bnpo", ref_logps=ref, beta=0.1,
                             token_weights=keep)
    assert sel.item() == pytest.approx(full.item()) and full.item() == pytest.approx(0.1 * (math.exp(-0.5) + 0.5 - 1))
    # and with A != 0 the unselected tokens drop out of the policy term: A = 1 -> -(selected tokens) / 6
    pg, _ = obj.policy_loss(logps, logps, torch.ones(2), EMASK, loss_type="bnpo", token_weights=keep)
    assert pg.item() == pytest.approx(-3 / 6)
