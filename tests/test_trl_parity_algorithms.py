"""GSPO, CISPO, top-entropy token selection and RLOO against TRL's own code (as test_trl_parity.py does).

TRL's ``GRPOTrainer._compute_loss`` runs as shipped on the stand-in trainer of tests/trl_stand_in.py,
whose log-prob/entropy hook returns the tensors we feed; RLOO advantages come from a real tiny
``RLOOTrainer`` whose reward function replays fixed values. REINFORCE++ has no TRL counterpart
(tests/test_algorithms.py checks it by hand).
"""

from __future__ import annotations

import pytest
import torch

from lit_reason.algorithms import advantages as adv
from lit_reason.algorithms import objectives as obj

pytest.importorskip("trl.trainer.grpo_trainer", reason="TRL is a test-only dependency (pip install trl)")

from tests.trl_stand_in import TOL, G, T, make_batch, tiny_trainer, trl_advantages, trl_loss, trl_trainer


#: per-sequence shifts of the old log-probs, so that whole sequences leave the clip range at both
#: bounds (row 0: A > 0, ratio e^.4; row 1: A < 0, ratio e^-.4); the token noise alone averages out
SEQUENCE_SHIFT = torch.tensor([-0.4, 0.4, 0.0, 0.1, 0.0, -0.15], dtype=torch.float64)


def compare(loss_type, level, beta, eps_low, eps_high, padded, quantile=1.0):
    logps, old, ref, a, mask = make_batch(padded)
    if level == "sequence":
        old = logps + (old - logps) * 0.25 + SEQUENCE_SHIFT[:, None]
    entropies = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    ours_in, trl_in = logps.clone().requires_grad_(), logps.clone().requires_grad_()
    weights = obj.high_entropy_mask(entropies, mask, quantile).double() if quantile < 1.0 else None
    ours, metrics = obj.policy_loss(ours_in, old, a, mask, loss_type=loss_type, eps_low=eps_low, eps_high=eps_high,
                                    ref_logps=ref, beta=beta, max_completion_length=T, importance_sampling_level=level,
                                    token_weights=weights)
    ours.backward()
    trainer = trl_trainer(loss_type, beta, eps_low, eps_high, T, importance_sampling_level=level,
                          top_entropy_quantile=quantile)
    theirs = trl_loss(trainer, trl_in, old, ref, a, mask, entropies=entropies)
    theirs.backward()
    torch.testing.assert_close(ours.detach(), theirs.detach(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(ours_in.grad, trl_in.grad, atol=TOL, rtol=TOL)
    assert ours_in.grad.abs().sum() > 0
    return metrics, trainer._metrics["train"]


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_gspo_sequence_level_matches_trl(loss_type, beta, padded):
    ours, theirs = compare(loss_type, "sequence", beta, 0.2, 0.28, padded)
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
        assert float(ours[key]) == pytest.approx(theirs[key][-1], abs=1e-6), key
    # the inputs clip some sequences at each bound (the comparison is not vacuous)
    assert theirs["clip_ratio/high_mean"][-1] > 0 and theirs["clip_ratio/low_mean"][-1] > 0


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("eps_high", [5.0, 1.1])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_cispo_matches_trl(level, eps_high, beta):
    ours, theirs = compare("cispo", level, beta, 0.2, eps_high, padded=True)
    assert float(ours["cispo_clip_ratio"]) == pytest.approx(theirs["cispo_clip_ratio"][-1], abs=1e-6)
    if eps_high == 1.1:
        assert theirs["cispo_clip_ratio"][-1] > 0


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.0])
@pytest.mark.parametrize("loss_type,level", [("grpo", "token"), ("dapo", "token"), ("grpo", "sequence"),
                                             ("cispo", "token")])
def test_top_entropy_quantile_matches_trl(quantile, loss_type, level):
    compare(loss_type, level, 0.04, 0.2, 5.0 if loss_type == "cispo" else 0.28, padded=True, quantile=quantile)


def test_top_entropy_selection_changes_the_loss():
    """Guard against a vacuous comparison: the selection really drops tokens in both."""
    logps, old, _, a, mask = make_batch(True)
    ent = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    full, _ = obj.policy_loss(logps, old, a, mask)
    keep = obj.high_entropy_mask(ent, mask, 0.2)
    part, _ = obj.policy_loss(logps, old, a, mask, token_weights=keep.double())
    assert 0 < int(keep.sum()) < int(mask.sum()) and abs(float(full - part)) > 1e-3


# --------------------------------------------------------------------------- RLOO advantages
@pytest.fixture(scope="module")
def tiny_rloo_trainer(tmp_path_factory):
    """A real RLOOTrainer on the tiny preset; its reward function replays ``replay["rewards"]``."""
    from trl import RLOOConfig, RLOOTrainer

    return tiny_trainer(RLOOTrainer, RLOOConfig, tmp_path_factory, beta=0.0)


@pytest.mark.parametrize("normalize", [False, True])
def test_rloo_advantages_match_trl(tiny_rloo_trainer, normalize):
    """Including a missing reward (None) and a group whose rewards are all equal."""
    trainer, replay = tiny_rloo_trainer
    rewards = [1.0, 0.0, 0.5, 0.3, None, 0.9, 0.7, 0.7, 0.7]
    trainer.normalize_advantages = normalize
    theirs, r = trl_advantages(trainer, replay, rewards)
    ours = adv.rloo_advantages(r, G, scale="batch" if normalize else "none")
    torch.testing.assert_close(ours.float(), theirs.float(), atol=TOL, rtol=TOL)
    assert ours[4] == 0 and ours[:3].abs().sum() > 0
