"""Divergence guard: non-finite steps skipped and counted, N in a row stop the run, collapse warns,
non-finite weights never reach a checkpoint (lit_reason.modules.divergence)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.toy import ToyDataModule
from lit_reason.modules import GRPO
from lit_reason.modules.divergence import (
    DivergenceGuard, DivergenceSettings, collapse_sign, max_abs_weight, nonfinite_problem,
)
from lit_reason.utils.faults import EXIT_DIVERGED, TrainingDiverged


# ------------------------------------------------------------------ pure functions, by hand
def test_nonfinite_problem_names_the_first_bad_value():
    assert nonfinite_problem([0.5, -1.0], 3.0) is None
    assert nonfinite_problem([0.5], 3.0, torch.tensor([1.0, float("nan")])) is None  # NaN reward = abstained
    assert nonfinite_problem([0.5], 3.0, torch.tensor([1.0, float("inf"), float("inf")])) == "reward inf on 2 completion(s)"
    assert nonfinite_problem([0.5, float("nan")], 3.0) == "loss nan"
    assert nonfinite_problem([0.5], float("inf")) == "gradient norm inf"
    assert nonfinite_problem([float("-inf")], float("nan")) == "loss -inf"  # the loss is named before the gradient


def test_collapse_sign():
    assert collapse_sign(0.0, True, 1.0, 1.0, 10.0) == "gradient norm exactly 0 although advantages are not"
    assert collapse_sign(0.0, False, 1.0, 1.0, 10.0) is None  # all groups agreed: nothing to learn, not a collapse
    assert collapse_sign(1e-3, True, 9.9, 1.0, 10.0) is None  # grown 9.9x: under the bound
    assert collapse_sign(0.5, True, 25.0, 2.0, 10.0).startswith("largest |weight| 25, more than model.divergence.weight_growth=10 times its first-step 2")
    assert collapse_sign(0.5, True, 1e9, 2.0, 0.0) is None  # 0 = no weight check


def test_max_abs_weight():
    assert float(max_abs_weight([torch.tensor([1.0, -7.0]), torch.tensor([[3.0]])])) == 7.0
    assert math.isnan(float(max_abs_weight([torch.tensor([1.0, float("nan")]), torch.tensor([9.0])])))
    assert math.isinf(float(max_abs_weight([torch.tensor([1.0, float("-inf")])])))


class FakeModule(torch.nn.Module):
    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([weight]))
        self.global_step = 0
        self._trainer = None


def test_guard_counts_and_stops_at_the_nth_bad_step_in_a_row():
    guard, m = DivergenceGuard(DivergenceSettings(max_bad_steps=3)), FakeModule()
    with pytest.warns(UserWarning, match="step 1 skipped: non-finite gradient norm nan"):
        assert guard.allow_step(m, [0.1], float("nan")) is False
    with pytest.warns(UserWarning):
        assert guard.allow_step(m, [float("inf")], 1.0) is False
    assert guard.allow_step(m, [0.1], 1.0) is True  # a good step resets the streak
    assert (guard.bad_in_a_row, guard.skipped_total) == (0, 2)
    with pytest.warns(UserWarning):
        guard.allow_step(m, [0.1], float("inf"))
        guard.allow_step(m, [0.1], float("inf"))
    with pytest.raises(TrainingDiverged, match="3 optimizer steps in a row had a non-finite value") as err:
        guard.allow_step(m, [0.1], float("inf"))
    assert err.value.exit_code == EXIT_DIVERGED == 3 and guard.skipped_total == 5
    assert "\n" not in str(err.value)


def test_guard_with_zero_limit_skips_forever():
    guard, m = DivergenceGuard(DivergenceSettings(max_bad_steps=0)), FakeModule()
    with pytest.warns(UserWarning):
        for _ in range(10):
            assert guard.allow_step(m, [float("nan")], 1.0) is False
    assert guard.skipped_total == 10


def test_collapse_warns_once_per_streak_and_nonfinite_weights_stop():
    guard, m = DivergenceGuard(DivergenceSettings(collapse_steps=3)), FakeModule()
    adv = torch.tensor([0.5, -0.5])
    with pytest.warns(UserWarning, match="possible collapse: gradient norm exactly 0") as record:
        for _ in range(5):
            guard.after_step(m, 0.0, adv)
    assert len([w for w in record if "collapse" in str(w.message)]) == 1
    guard.after_step(m, 0.3, adv)
    assert guard.collapsed_in_a_row == 0
    guard.first_max_abs_weight = 1.0
    with torch.no_grad():
        m.w.fill_(-11.0)  # 11x the first step's largest weight
    with pytest.warns(UserWarning, match=r"largest \|weight\| 11, more than"):
        for _ in range(3):
            guard.after_step(m, 0.3, adv)
    with torch.no_grad():
        m.w.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="weights became non-finite"):
        guard.after_step(m, 0.3, adv)


# ------------------------------------------------------------------ a real (tiny) run
class InfRewardGRPO(GRPO):
    """A variant whose own reward overflows to inf on some rows (completions of odd length). A
    user's reward source returning inf is stopped earlier, in scoring (tests/test_reward_calls.py);
    this reaches the update, where the guard is the last line of defence."""

    def compute_rewards(self, problems, rollout, scores, old):
        rewards, metrics = super().compute_rewards(problems, rollout, scores, old)
        odd = torch.tensor([len(t) % 2 == 1 for t in rollout.texts], device=rewards.device)
        return torch.where(odd, torch.full_like(rewards, float("inf")), rewards), metrics


def _fit(tmp_path, module, max_steps, every=1):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=every, save_last=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[ckpt], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=ToyDataModule(train_size=8, batch_size=2))
    return trainer


def test_infinite_reward_skips_every_step_then_stops_with_weights_and_checkpoint_untouched(tmp_path):
    L.seed_everything(0)
    module = InfRewardGRPO(model="tiny", num_generations=4, max_new_tokens=6, lr=1e-2, divergence={"max_bad_steps": 3})
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.warns(UserWarning, match="skipped: non-finite reward inf"), \
            pytest.raises(TrainingDiverged, match=r"3 optimizer steps in a row .* step 3: reward inf"):
        _fit(tmp_path, module, max_steps=10)
    assert module.divergence.skipped_total == 3 and module.global_step == 2  # the third raised before stepping
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # no update applied
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)  # written after the skipped steps 1-2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert saved["lit_reason"]["skipped_steps"] == 2


def test_huge_lr_stops_before_a_nonfinite_checkpoint(tmp_path):
    """lr 1e30: the first update makes the weights non-finite (or the next gradient overflows); the
    run stops in one line and every checkpoint on disk is finite."""
    L.seed_everything(0)
    module = GRPO(model="tiny", num_generations=4, max_new_tokens=6, lr=1e30, max_grad_norm=1.0)
    with pytest.raises(TrainingDiverged, match="training diverged"):
        _fit(tmp_path, module, max_steps=8)
    for path in (tmp_path / "ckpt").glob("*.ckpt"):
        saved = torch.load(path, weights_only=False)
        assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point()), path


def test_lr_1e3_warns_of_collapse(tmp_path):
    """lr 1e3 (the issue's case): the weights blow up while the run goes on; the weight-growth
    signature warns within a few steps (the first step's largest |w| is measured, then 10x is the bound)."""
    L.seed_everything(0)
    module = GRPO(model="tiny", num_generations=4, max_new_tokens=6, lr=1e3, divergence={"collapse_steps": 2})
    with pytest.warns(UserWarning, match=r"possible collapse: largest \|weight\|"):
        _fit(tmp_path, module, max_steps=6, every=100)
    assert module.divergence.first_max_abs_weight is not None


def test_sft_steps_are_guarded_too(tmp_path):
    """SFT's own step: a NaN loss (so NaN gradients) is skipped, weights untouched, and stops the run;
    a trainable weight made infinite stops it at once."""
    from lit_reason.modules.sft import SFT

    L.seed_everything(0)
    module = SFT(model="tiny", lr=1e-3, divergence={"max_bad_steps": 2})
    loss_of = module.supervised_loss
    module.supervised_loss = lambda batch: (lambda loss, count: (loss * float("nan"), count))(*loss_of(batch))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.warns(UserWarning, match="step 1 skipped: non-finite loss nan"), \
            pytest.raises(TrainingDiverged, match="2 optimizer steps in a row"):
        _fit(tmp_path / "nan_loss", module, max_steps=5)
    assert module.divergence.skipped_total == 2
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())

    module = SFT(model="tiny", lr=1e-3)
    with torch.no_grad():
        module.policy.get_output_embeddings().weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="the weights became non-finite at step 1"):
        _fit(tmp_path / "inf_weight", module, max_steps=5)
