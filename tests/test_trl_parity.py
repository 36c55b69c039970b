"""Same numbers as TRL's GRPOTrainer: our objectives against TRL's own loss and advantage code.

TRL's ``GRPOTrainer._compute_loss`` runs as shipped on a stand-in trainer whose per-token log-prob
hook returns the tensor we feed; advantages come from a real (tiny) GRPOTrainer whose reward function
returns fixed values (both built in tests/trl_stand_in.py). Where TRL differs from us on purpose, the
test pins the difference (see docs/vs_trl.md).
"""

from __future__ import annotations

import pytest
import torch

from lit_reason.algorithms import objectives as obj

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer", reason="TRL is a test-only dependency (pip install trl)")

from tests.trl_stand_in import TOL, G, T, make_batch, tiny_trainer, trl_advantages, trl_loss, trl_trainer

SHARED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def both(loss_type, beta, eps_low, eps_high, padded, **trl_kwargs):
    """(ours, TRL's) loss and gradient w.r.t. the per-token log-probs, on identical inputs."""
    logps, old, ref, adv, mask = make_batch(padded)
    ours_in, trl_in = logps.clone().requires_grad_(), logps.clone().requires_grad_()
    ours, _ = obj.policy_loss(ours_in, old, adv, mask, loss_type=loss_type, eps_low=eps_low, eps_high=eps_high,
                              ref_logps=ref, beta=beta, max_completion_length=T)
    ours.backward()
    trainer = trl_trainer(loss_type, beta, eps_low, eps_high, T, **trl_kwargs)
    theirs = trl_loss(trainer, trl_in, old, ref, adv, mask)
    theirs.backward()
    return (ours.detach(), ours_in.grad), (theirs.detach(), trl_in.grad), (logps, old, adv, mask)


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("eps_low,eps_high", [(0.2, 0.2), (0.2, 0.28)], ids=["sym", "asym"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", SHARED_LOSS_TYPES)
def test_loss_and_gradient_match_trl(loss_type, beta, eps_low, eps_high, padded):
    (ours, ours_grad), (theirs, trl_grad), (logps, old, adv, mask) = both(loss_type, beta, eps_low, eps_high, padded)
    ratio = torch.exp(logps - old)
    a = adv[:, None].expand_as(ratio)
    live = mask.bool()
    # the inputs exercise both clip bounds, so eps_high vs eps_low is really compared
    assert ((ratio > 1 + eps_high) & (a > 0) & live).any() and ((ratio < 1 - eps_low) & (a < 0) & live).any()
    assert ours_grad.abs().sum() > 0
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=TOL)
    torch.testing.assert_close(ours_grad, trl_grad, atol=TOL, rtol=TOL)
    assert torch.all(ours_grad[~live] == 0)  # padding never gets gradient


def test_eps_high_is_not_eps_low_in_either():
    """Guard against a vacuous comparison: widening eps_high changes both losses, identically."""
    (sym, _), (sym_trl, _), _ = both("bnpo", 0.0, 0.2, 0.2, True)
    (asym, _), (asym_trl, _), _ = both("bnpo", 0.0, 0.2, 0.28, True)
    assert abs(float(sym - asym)) > 1e-3
    torch.testing.assert_close(sym - asym, sym_trl - asym_trl, atol=TOL, rtol=TOL)


# --------------------------------------------------------------------------- deliberate differences
def test_trl_default_kl_bias_correction_changes_the_gradient_not_the_on_policy_loss():
    """TRL (>= 1.x) multiplies the KL by the differentiable ratio by default (use_bias_correction_kl).

    On-policy the ratio is 1, so the loss value is unchanged but the KL gradient gains ``KL * dlogp``:
    per token, ours is ``beta * (1 - exp(ref - logp))``, TRL's adds ``beta * KL``. We keep the plain
    k3 gradient (the GRPO paper's); TRL users get ours with ``use_bias_correction_kl=False``.
    """
    logps, _, ref, adv, mask = make_batch(padded=True)
    beta = 0.04
    ours_in, trl_in = logps.clone().requires_grad_(), logps.clone().requires_grad_()
    ours, _ = obj.policy_loss(ours_in, logps, adv, mask, loss_type="bnpo", ref_logps=ref, beta=beta)
    ours.backward()
    theirs = trl_loss(trl_trainer("bnpo", beta, 0.2, 0.2, T, bias_correction_kl=True), trl_in, logps, ref, adv, mask)
    theirs.backward()
    torch.testing.assert_close(ours.detach(), theirs.detach(), atol=TOL, rtol=TOL)
    kl = obj.kl_k3(logps, ref)
    expected_extra = beta * kl * mask / mask.sum()
    torch.testing.assert_close(trl_in.grad - ours_in.grad, expected_extra, atol=TOL, rtol=TOL)
    assert expected_extra.abs().max() > 1e-4


def test_bnpo_under_accumulation_trl_averages_micro_batch_means_we_take_the_minibatch_mean():
    """With gradient accumulation over micro-batches of unequal token counts, TRL's bnpo is the mean
    of per-micro-batch token means; ours divides by the whole minibatch's token count (what the
    name promises). dr_grpo and grpo agree under equal-size micro-batches (checked here too)."""
    logps, old, ref, adv, mask = make_batch(padded=True)
    halves = [slice(0, 3), slice(3, 6)]
    for loss_type in ("bnpo", "grpo", "dr_grpo"):
        trl_total = ours_total = 0.0
        normalizer = obj.loss_normalizer(mask, loss_type, T)  # what GRPO.update passes for the minibatch
        for rows in halves:
            args = (logps[rows], old[rows], ref[rows], adv[rows], mask[rows])
            trl_total += float(trl_loss(trl_trainer(loss_type, 0.0, 0.2, 0.2, T, accumulation=2), *args))
            ours_total += float(obj.policy_loss(logps[rows], old[rows], adv[rows], mask[rows], loss_type=loss_type,
                                                max_completion_length=T, normalizer=normalizer)[0])
        whole = float(obj.policy_loss(logps, old, adv, mask, loss_type=loss_type, max_completion_length=T)[0])
        assert ours_total == pytest.approx(whole, abs=TOL)  # ours: micro-batching never changes the loss
        if loss_type == "bnpo":
            tokens = [int(mask[r].sum()) for r in halves]
            assert tokens[0] != tokens[1] and abs(trl_total - whole) > 1e-3
        else:
            assert trl_total == pytest.approx(whole, abs=TOL)


def test_dapo_normalizer_trl_uses_generation_batch_tokens_per_step():
    """TRL's dapo divides by ``num_items_in_batch / num_processes * accumulation / steps_per_generation``
    (the generation batch's token count spread evenly over its steps); ours by the minibatch's
    own token count. Equal when one generation batch is one step; off by the token share otherwise."""
    logps, old, ref, adv, mask = make_batch(padded=True)
    rows = slice(0, 3)  # this optimizer step sees half of a 2-step generation batch
    ours = float(obj.policy_loss(logps[rows], old[rows], adv[rows], mask[rows], loss_type="dapo")[0])
    trainer = trl_trainer("dapo", 0.0, 0.2, 0.2, T, steps_per_generation=2)
    theirs = float(trl_loss(trainer, logps[rows], old[rows], ref[rows], adv[rows], mask[rows], num_items=mask.sum()))
    step_tokens, per_step_share = float(mask[rows].sum()), float(mask.sum()) / 2
    assert theirs == pytest.approx(ours * step_tokens / per_step_share, rel=1e-9)
    assert step_tokens != per_step_share


# --------------------------------------------------------------------------- advantages
@pytest.fixture(scope="module")
def tiny_trl_trainer(tmp_path_factory):
    """A real GRPOTrainer on the tiny preset; its reward function replays ``replay["rewards"]``."""
    from trl import GRPOConfig

    return tiny_trainer(trl_grpo.GRPOTrainer, GRPOConfig, tmp_path_factory)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(tiny_trl_trainer, scale):
    """TRL's own advantage code (inside ``_generate_and_score_completions``) on the same rewards,
    including a missing reward (None) and a group whose rewards are all equal."""
    trainer, replay = tiny_trl_trainer
    rewards = [1.0, 0.0, 0.5, 0.3, None, 0.9, 0.7, 0.7, 0.7]
    trainer.scale_rewards = scale
    theirs, r = trl_advantages(trainer, replay, rewards)
    ours = obj.group_advantages(r, G, scale)
    torch.testing.assert_close(ours.float(), theirs.float(), atol=TOL, rtol=TOL)
    assert ours[4] == 0 and torch.all(ours[6:] == 0) and ours[:3].abs().sum() > 0
