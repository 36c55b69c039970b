"""Rollout-mismatch correction: hand-computed weights, identity, overflow safety, metrics."""

import math

import pytest
import torch

from lit_reason.rollout.correction import RolloutCorrection, correct_rollout, importance_weights, mismatch_metrics

LN = math.log


def logps(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# trainer/sampler token probabilities chosen so the ratios are 0.5, 1, 3 (row 0) and 1.5, 0.25, pad (row 1)
TRAINER = logps([LN(0.2), LN(0.5), LN(0.6)], [LN(0.3), LN(0.1), 0.0])
SAMPLER = logps([LN(0.4), LN(0.5), LN(0.2)], [LN(0.2), LN(0.4), -7.0])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_token_truncate_clamps_each_ratio_from_above():
    w, changed = importance_weights(TRAINER, SAMPLER, MASK, "token", "truncate", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.25, 1.0]]))
    assert changed.tolist() == [[False, False, True], [False, False, False]]


def test_token_truncate_with_floor_and_token_mask():
    w, changed = importance_weights(TRAINER, SAMPLER, MASK, "token", "truncate", cap=2.0, floor=0.4)
    torch.testing.assert_close(w, torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.4, 1.0]]))
    assert changed.tolist() == [[False, False, True], [False, True, False]]
    w, changed = importance_weights(TRAINER, SAMPLER, MASK, "token", "mask", cap=2.0, floor=0.4)
    torch.testing.assert_close(w, torch.tensor([[0.5, 1.0, 0.0], [1.5, 0.0, 1.0]]))
    assert changed.tolist() == [[False, False, True], [False, True, False]]


def test_sequence_level_uses_the_product_over_real_tokens():
    # row 0: 0.5 * 1 * 3 = 1.5 ; row 1: 1.5 * 0.25 = 0.375 (the padded position is ignored)
    w, changed = importance_weights(TRAINER, SAMPLER, MASK, "sequence", "truncate", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[1.5] * 3, [0.375] * 3]))
    assert not changed.any()
    w, changed = importance_weights(TRAINER, SAMPLER, MASK, "sequence", "mask", cap=1.2)
    torch.testing.assert_close(w, torch.tensor([[0.0] * 3, [0.375] * 3]))
    assert changed.tolist() == [[True] * 3, [False] * 3]


def test_identity_when_sampler_and_trainer_agree():
    lp = torch.randn(4, 7).clamp_max(0) - 0.1
    mask = (torch.rand(4, 7) > 0.3).long()
    for level in ("token", "sequence"):
        for mode in ("truncate", "mask"):
            cfg = RolloutCorrection(level, mode, cap=1.0, floor=1.0)  # even the tightest bounds pass r = 1
            w, metrics = correct_rollout(lp, lp.clone(), mask, cfg)
            assert torch.equal(w, torch.ones_like(w))
            assert metrics["rollout_correction/kl_max"] == 0.0
            assert metrics["rollout_correction/corrected_share"] == 0.0


def test_huge_sequence_ratio_does_not_overflow():
    trainer = torch.zeros(1, 400)
    sampler = torch.full((1, 400), -1.0)  # log r = 400 in total: e^400 overflows float32
    w, changed = importance_weights(trainer, sampler, torch.ones(1, 400), "sequence", "truncate", cap=3.0)
    assert torch.isfinite(w).all() and torch.allclose(w, torch.full_like(w, 3.0))
    w, _ = importance_weights(trainer, sampler, torch.ones(1, 400), "sequence", "mask", cap=3.0)
    assert torch.equal(w, torch.zeros_like(w))


def test_nan_sampler_logprob_counts_as_no_mismatch():
    w, _ = importance_weights(logps([LN(0.5)]), logps([float("nan")]), torch.ones(1, 1), "token", "truncate", 2.0)
    assert w.item() == 1.0


def test_metrics_by_hand():
    w, changed = importance_weights(TRAINER, SAMPLER, MASK, "token", "truncate", cap=2.0)
    m = mismatch_metrics(TRAINER, SAMPLER, MASK, changed, w)
    ratios = torch.tensor([0.5, 1.0, 3.0, 1.5, 0.25])
    k3 = (ratios - 1) - ratios.log()  # 0.1931, 0, 0.9014, 0.0945, 0.6363
    assert m["kl_mean"] == pytest.approx(float(k3.mean()), abs=1e-5)
    assert m["kl_max"] == pytest.approx(3 - 1 - LN(3), abs=1e-5)
    assert m["logp_diff_max"] == pytest.approx(LN(4), abs=1e-5)  # |log 0.25|
    assert m["corrected_share"] == pytest.approx(1 / 5)
    assert m["weight_mean"] == pytest.approx((0.5 + 1 + 2 + 1.5 + 0.25) / 5, abs=1e-6)


def test_bad_config_is_one_line():
    with pytest.raises(ValueError, match="level"):
        RolloutCorrection(level="seq")
    with pytest.raises(ValueError, match="mode"):
        RolloutCorrection(mode="clip")
    with pytest.raises(ValueError, match="cap must be >= 1"):
        RolloutCorrection(cap=0.5)
    with pytest.raises(ValueError, match="floor"):
        RolloutCorrection(floor=2.0)


def test_grpo_applies_the_correction_as_a_token_weight_and_logs_it():
    """In GRPO: the weights multiply the existing token weights (NTHR's); a float32 built-in engine
    agrees with the trainer, so a fitted run logs ~0 mismatch and corrects no token."""
    import lightning as L

    from datamodules import ToyDataModule
    from lit_reason.modules import GRPO
    from lit_reason.rollout import Rollout

    L.seed_everything(0)
    module = GRPO(model="tiny", num_generations=4, max_new_tokens=8, lr=1e-2, prompt_format="plain",
                  rollout_correction={"level": "token", "mode": "truncate", "cap": 2.0})
    assert module.rollout_correction == RolloutCorrection("token", "truncate", 2.0)
    assert module.hparams.rollout_correction == {"level": "token", "mode": "truncate", "cap": 2.0, "floor": None}
    rollout = Rollout(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long),
                      torch.zeros(2, 3, dtype=torch.long), MASK, SAMPLER, torch.zeros(2, dtype=torch.bool), ["", ""])
    nthr = torch.full((2, 3), 0.5)
    weights, metrics = module.correct_rollout_mismatch(rollout, MASK.float(), {"old_logps": TRAINER}, nthr)
    torch.testing.assert_close(weights, 0.5 * torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.25, 1.0]]))
    assert metrics["rollout_correction/corrected_share"] == pytest.approx(0.2)

    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, ToyDataModule(batch_size=2, val_size=0))
    logged = trainer.callback_metrics
    assert float(logged["rollout_correction/kl_max"]) < 1e-5
    assert float(logged["rollout_correction/corrected_share"]) == 0.0


def test_correction_off_leaves_weights_alone():
    from lit_reason.modules import GRPO

    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4)
    assert module.rollout_correction is None
    assert module.correct_rollout_mismatch(None, MASK, {"old_logps": TRAINER}, None) == (None, {})
