"""The LR schedule spans the optimizer steps a run takes (num_iterations x minibatches per rollout),
and ``trainer.max_steps`` counts optimizer steps (Lightning's ``global_step`` under manual
optimization), checked on real short fits of the ``tiny`` preset."""

import math
import warnings

import lightning as L
import pytest

from datamodules import ToyDataModule
from lit_reason.modules import GRPO, HRPO, SFT
from lit_reason.utils.optim import optimizer_steps_per_rollout, run_optimizer_steps

LR = 0.01


class StepLog(L.Callback):
    """The LR each optimizer step used (every param group), the global_step before it, and the rollouts."""

    def __init__(self):
        self.lrs, self.steps, self.batches, self.truncated = [], [], 0, []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])
        self.steps.append(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1
        if isinstance(outputs, dict) and "rollout" in outputs:
            self.truncated.extend(outputs["rollout"].truncated.tolist())


def fit(module, data, **trainer_args):
    log = StepLog()
    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[log], **trainer_args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, data)
    return log, trainer, [str(w.message) for w in caught]


def toy(batch_size=2):
    return ToyDataModule(task="char_fill", train_size=16, val_size=0, batch_size=batch_size)


def grpo(**kw):
    args = dict(model="tiny", num_generations=2, max_new_tokens=4, lr=LR, prompt_format="plain")
    return GRPO(**{**args, **kw})


def warmup_cosine(i, total, warmup):
    """Written out again (not lit_reason.utils.optim's function): linear warmup, then cosine to 0 at ``total``."""
    if i < warmup:
        return (i + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (i - warmup) / (total - warmup)))


def test_steps_per_rollout_and_run_length_by_hand():
    assert optimizer_steps_per_rollout(8, 1, None) == 1
    assert optimizer_steps_per_rollout(8, 2, None) == 2
    assert optimizer_steps_per_rollout(8, 2, 4) == 4
    assert optimizer_steps_per_rollout(8, 3, 3) == 9  # minibatches of 3, 3, 2
    assert run_optimizer_steps(4, 8, math.inf) == 8
    assert run_optimizer_steps(4, 5, math.inf) == 8  # Lightning checks max_steps between rollouts
    assert run_optimizer_steps(4, -1, 3) == 12  # epochs x batches
    assert run_optimizer_steps(4, 100, 3) == 12
    assert run_optimizer_steps(4, -1, math.inf) == math.inf


def test_cosine_with_iterations_and_minibatches_ends_at_the_last_optimizer_step():
    """mu=2, 4 rows in minibatches of 2: 4 optimizer steps per rollout; max_steps=8 -> 2 rollouts."""
    module = grpo(num_iterations=2, minibatch_size=2, lr_schedule="cosine", warmup_steps=2)
    log, trainer, _ = fit(module, toy(), max_steps=8)
    assert log.batches == 2 and trainer.global_step == 8
    assert log.steps == list(range(8))  # global_step counts optimizer steps, not rollouts
    expected = [LR * warmup_cosine(i, 8, 2) for i in range(8)]
    assert [g[0] for g in log.lrs] == pytest.approx(expected, rel=1e-9)
    assert min(g[0] for g in log.lrs) > 0.04 * LR  # the last step still learns: 0.5(1 + cos(5pi/6)) = 0.067
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 8 and module.optimizers().param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)


def test_max_epochs_with_masked_truncations_counts_every_pass():
    """No max_steps: the length comes from epochs x batches x mu. With max_new_tokens=1 every
    completion is truncated and masked out, yet every pass still steps the optimizer and schedule."""
    module = grpo(num_iterations=3, max_new_tokens=1, mask_truncated_completions=True, lr_schedule="linear",
                  warmup_ratio=1 / 3)
    log, trainer, _ = fit(module, toy(), max_epochs=1, limit_train_batches=2)
    assert log.batches == 2 and trainer.global_step == 6 and len(log.truncated) == 8 and all(log.truncated)
    # 6 steps, warmup round(6 / 3) = 2, then linear from 1 to 0 at step 6
    expected = [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert [g[0] for g in log.lrs] == pytest.approx([LR * m for m in expected], rel=1e-9)


def test_max_steps_not_a_multiple_stops_after_the_rollout_that_reaches_it():
    module = grpo(num_iterations=2, minibatch_size=2, lr_schedule="linear")
    log, trainer, messages = fit(module, toy(), max_steps=5)
    assert log.batches == 2 and trainer.global_step == 8  # ceil(5 / 4) rollouts of 4 steps
    assert [g[0] for g in log.lrs] == pytest.approx([LR * (1 - i / 8) for i in range(8)], rel=1e-9)
    assert any("max_steps=5 counts optimizer steps" in m and "at 8 steps" in m for m in messages), messages


def test_unbounded_run_with_a_decaying_schedule_fails_clearly():
    module = grpo(lr_schedule="cosine")
    with pytest.raises(ValueError, match="needs a run length: set trainer.max_steps"):
        fit(module, toy(), max_epochs=-1)


def test_sft_schedule_counts_one_step_per_batch():
    """SFT steps once per batch (its num_iterations stays 1): linear over 3 batches."""
    module = SFT(model="tiny", prompt_format="plain", lr=LR, lr_schedule="linear", val_max_new_tokens=2, max_length=32)
    log, trainer, _ = fit(module, toy(), max_epochs=1, limit_train_batches=3)
    assert log.batches == 3 and trainer.global_step == 3
    assert [g[0] for g in log.lrs] == pytest.approx([LR, LR * 2 / 3, LR / 3], rel=1e-9)


def test_hrpo_param_groups_share_the_schedule():
    """HRPO's gate and Lambda groups keep their own base lr, each scaled by the same multiplier."""
    module = HRPO(model="tiny", num_generations=2, max_new_tokens=4, prompt_format="plain", lr=LR, gate_lr=0.1,
                  lambda_lr=0.5, lr_schedule="linear")
    log, trainer, _ = fit(module, toy(), max_steps=2)
    assert trainer.global_step == 2
    assert log.lrs[0] == pytest.approx([LR, 0.1, 0.5]) and log.lrs[1] == pytest.approx([LR / 2, 0.05, 0.25])



class LoggedLR(L.Callback):
    """The ``lr`` metric each training batch logged (what a logger would record for that step)."""

    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(float(trainer.callback_metrics["lr"]))


@pytest.mark.parametrize("make, per_rollout", [
    (lambda: grpo(lr_schedule="linear", warmup_steps=3), 1),
    (lambda: grpo(lr_schedule="linear", warmup_steps=3, num_iterations=2), 2),
    (lambda: SFT(model="tiny", prompt_format="plain", lr=LR, lr_schedule="linear", warmup_steps=3,
                 val_max_new_tokens=2, max_length=32), 1),
], ids=["grpo", "grpo_mu2", "sft"])
def test_logged_lr_is_the_lr_the_step_used(make, per_rollout):
    """Warmup of 3 over 6 optimizer steps: step i (from 0) applies LR * (i + 1) / 3 while warming
    up. The logged lr is that value (the mean over a rollout's steps with mu=2), not the one the
    scheduler has moved on to after the step."""
    logged = LoggedLR()
    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[logged], max_steps=6)
    trainer.fit(make(), toy())
    if per_rollout == 1:  # batch 1: step 0 -> LR / 3; batch 2: step 1 -> 2 LR / 3
        expected = [LR / 3, 2 * LR / 3]
    else:  # batch 1: steps 0, 1 -> mean(1/3, 2/3) LR; batch 2: steps 2 (3/3, warmup ends) and 3 ((6-3)/(6-3))
        expected = [LR / 2, LR]
    assert logged.values[:2] == pytest.approx(expected, rel=1e-6)
