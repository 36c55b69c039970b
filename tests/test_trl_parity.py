"""Same numbers as TRL's GRPOTrainer: our objectives against TRL's own loss and advantage code.

TRL's loss lives in ``GRPOTrainer._compute_loss``, a method that first runs the model. We execute
that very method on a trainer built with ``object.__new__`` (no model, no accelerator), whose
per-token log-prob hook returns the tensor we feed, so every line of TRL's aggregation runs as
shipped. Advantages come from a real (tiny) GRPOTrainer whose reward function returns fixed values.
Where TRL differs from us on purpose, the test pins the difference (see docs/vs_trl.md).
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from lit_reason import objectives as obj

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer", reason="TRL is a test-only dependency (pip install trl)")

TOL = 1e-5
SHARED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
B, T, G = 6, 7, 3


class _OneProcess:
    """The accelerator calls ``_compute_loss`` makes, for a single process: all identities."""

    num_processes, process_index, sync_gradients = 1, 0, True

    def gather(self, tensor):
        return tensor

    gather_for_metrics = gather

    def reduce(self, tensor, reduction="sum"):
        return tensor


def trl_trainer(loss_type: str, beta: float, eps_low: float, eps_high: float, max_len: int, *,
                accumulation: int = 1, steps_per_generation: int = 1, bias_correction_kl: bool = False):
    """A GRPOTrainer with exactly the attributes ``_compute_loss`` reads (a missing one raises)."""
    trainer = object.__new__(trl_grpo.GRPOTrainer)
    attrs = dict(
        loss_type=loss_type, beta=beta, epsilon_low=eps_low, epsilon_high=eps_high, max_completion_length=max_len,
        importance_sampling_level="token", top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        aux_loss_enabled=False, use_vllm=False, vllm_importance_sampling_correction=False,
        _entropy_bonus_enabled=False, current_gradient_accumulation_steps=accumulation,
        accelerator=_OneProcess(), model=torch.nn.Module().train(), _metrics=defaultdict(lambda: defaultdict(list)),
        args=SimpleNamespace(use_bias_correction_kl=bias_correction_kl, delta=None,
                             steps_per_generation=steps_per_generation),
    )
    for name, value in attrs.items():
        setattr(trainer, name, value)
    return trainer


def trl_loss(trainer, logps, old, ref, advantages, mask, num_items=None):
    """Run TRL's ``_compute_loss`` with ``logps`` standing in for the model's per-token log-probs."""
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros_like(logps), None)
    rows, width = mask.shape
    inputs = {
        "prompt_ids": torch.zeros(rows, 1, dtype=torch.long), "prompt_mask": torch.ones(rows, 1, dtype=torch.long),
        "completion_ids": torch.zeros(rows, width, dtype=torch.long), "completion_mask": mask,
        "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum() if num_items is None else num_items,
    }
    return trainer._compute_loss(None, inputs)


def make_batch(padded: bool, seed: int = 0):
    """Log-probs, old (off-policy enough that both clip bounds bite), reference, advantages, mask."""
    gen = torch.Generator().manual_seed(seed)
    logps = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3 - 0.05
    old = logps + torch.randn(B, T, generator=gen, dtype=torch.float64) * 0.4
    ref = logps + torch.randn(B, T, generator=gen, dtype=torch.float64) * 0.3
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.9, 0.2], dtype=torch.float64)
    advantages = obj.group_advantages(rewards, G)
    lengths = torch.tensor([7, 3, 2, 5, 0, 6]) if padded else torch.full((B,), T)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return logps, old, ref, advantages, mask


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
    """A real GRPOTrainer on the tiny preset; its reward function replays ``FIXED_REWARDS``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from lit_reason.policy import load_policy

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny")
    policy = load_policy("tiny")
    policy.model.save_pretrained(path)
    policy.tokenizer.save_pretrained(path)
    replay = {"rewards": []}

    def fixed_reward(completions, **kwargs):
        return list(replay["rewards"])

    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("out")), per_device_train_batch_size=3 * G,
                      num_generations=G, max_completion_length=4, report_to="none", use_cpu=True,
                      gradient_checkpointing=False, disable_tqdm=True, save_strategy="no")
    trainer = trl_grpo.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=fixed_reward, args=args,
                                   train_dataset=Dataset.from_list([{"prompt": "abc"}] * 3),
                                   processing_class=AutoTokenizer.from_pretrained(path))
    return trainer, replay


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(tiny_trl_trainer, scale):
    """TRL's own advantage code (inside ``_generate_and_score_completions``) on the same rewards,
    including a missing reward (None) and a group whose rewards are all equal."""
    trainer, replay = tiny_trl_trainer
    rewards = [1.0, 0.0, 0.5, 0.3, None, 0.9, 0.7, 0.7, 0.7]
    replay["rewards"] = rewards
    trainer.scale_rewards = scale
    trainer.model.train()
    theirs = trainer._generate_and_score_completions([{"prompt": f"q{i // G}"} for i in range(3 * G)])["advantages"]
    ours = obj.group_advantages(torch.tensor([float("nan") if r is None else r for r in rewards]), G, scale)
    torch.testing.assert_close(ours.float(), theirs.float(), atol=TOL, rtol=TOL)
    assert ours[4] == 0 and torch.all(ours[6:] == 0) and ours[:3].abs().sum() > 0
