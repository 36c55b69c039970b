"""The algorithm switches as YAML options of the GRPO family: they train, log, compose with
Intuitor / NTHR / HRPO / FP4, and a combination that cannot work fails before training."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from datamodules import ToyDataModule
from lit_reason.algorithms import advantages as adv
from lit_reason.modules import GRPO, HRPO, NTHR, Intuitor
from lit_reason.modules.intuitor import summed_group_advantages
from lit_reason.precision import FP4Precision

HALF = {"tests.test_dynamic_sampling:half_constant": 1.0}


class Recorder(L.Callback):
    def __init__(self):
        self.outputs, self.metrics = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.outputs.append(outputs)
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def fit(module, steps=2, plugins=None, batch_size=2):
    rec = Recorder()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec], plugins=plugins)
    trainer.fit(module, ToyDataModule(batch_size=batch_size, val_size=0))
    return rec


BASE = dict(model="tiny", num_generations=4, max_new_tokens=8, lr=1e-2, prompt_format="plain")
SWITCHES = {
    "gspo": dict(importance_sampling_level="sequence", num_iterations=2),
    "cispo": dict(loss_type="cispo", eps_high=5.0, num_iterations=2),
    "rloo": dict(advantage_estimator="rloo", scale_rewards="none"),
    "reinforce_pp": dict(advantage_estimator="reinforce_pp"),
    "reinforce_pp_baseline": dict(advantage_estimator="reinforce_pp_baseline"),
    "top_entropy": dict(top_entropy_quantile=0.2),
    "dynamic": dict(dynamic_sampling=True, rewards=HALF, max_resample_batches=3),
}
EXPECTED_KEY = {"cispo": "cispo_clip_ratio", "top_entropy": "entropy_selection/frac_tokens",
                "dynamic": "dynamic_sampling/kept_groups", "gspo": "clip_ratio/region_mean"}


@pytest.mark.parametrize("name", list(SWITCHES))
def test_every_switch_trains_and_logs(name):
    L.seed_everything(0)
    module = GRPO(**{**BASE, **SWITCHES[name]})
    before = torch.cat([p.detach().flatten().clone() for p in module.policy.parameters()])
    rec = fit(module)
    after = torch.cat([p.detach().flatten() for p in module.policy.parameters()])
    m = rec.metrics[-1]
    assert EXPECTED_KEY.get(name, "loss") in m and "reward" in m
    assert not torch.equal(before, after)  # it did update the weights


def test_top_entropy_quantile_trains_on_about_that_share_of_tokens():
    L.seed_everything(0)
    rec = fit(GRPO(**{**BASE, "top_entropy_quantile": 0.25}), steps=2, batch_size=4)
    frac = rec.metrics[-1]["entropy_selection/frac_tokens"]
    assert 0.2 <= frac <= 0.35, frac


def test_estimator_advantages_reach_the_update():
    L.seed_everything(0)
    rec = fit(GRPO(**{**BASE, "advantage_estimator": "rloo", "scale_rewards": "none"}), steps=1)
    out = rec.outputs[0]
    torch.testing.assert_close(out["advantages"], adv.rloo_advantages(out["rewards"], 4))


# --------------------------------------------------------------------------- with the other methods
def test_intuitor_sums_each_sources_estimator_advantages():
    sources = {"self_certainty": torch.tensor([0.1, 0.4, 0.2, 0.9]), "correct": torch.tensor([1.0, 0.0, 0.0, 0.0])}
    weights = {"self_certainty": 1.0, "correct": 0.5}
    got = summed_group_advantages(sources, weights, 2, "none", "rloo")
    expected = adv.rloo_advantages(sources["self_certainty"], 2) + 0.5 * adv.rloo_advantages(sources["correct"], 2)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("cls,kwargs", [
    (Intuitor, dict(advantage_estimator="reinforce_pp_baseline", importance_sampling_level="sequence", num_iterations=2,
                    dynamic_sampling=True)),
    (NTHR, dict(loss_type="cispo", eps_high=5.0, top_entropy_quantile=0.5, advantage_estimator="rloo",
                scale_rewards="batch", dynamic_sampling=True, rewards=HALF, max_resample_batches=3)),
    (HRPO, dict(delimiter="<answer>", importance_sampling_level="sequence", top_entropy_quantile=0.5,
                dynamic_sampling=True, rewards=HALF, max_resample_batches=3)),
], ids=["intuitor", "nthr", "hrpo"])
def test_switches_compose_with_each_method(cls, kwargs):
    L.seed_everything(0)
    module = cls(**{**BASE, **kwargs})
    rec = fit(module)
    assert rec.outputs and all(len(o["rollout"].texts) == 8 for o in rec.outputs)  # mu = 2: one rollout, 2 steps
    if kwargs.get("rewards") == HALF:  # refills ran: the trained batch merges groups of several rollouts
        totals = module.dynamic_sampling_totals
        assert totals["generated_groups"] > totals["kept_groups"] >= 1
        assert rec.metrics[-1]["dynamic_sampling/rollout_batches"] > 1


def test_switches_compose_with_the_fp4_plugin():
    L.seed_everything(0)
    module = GRPO(**{**BASE, "importance_sampling_level": "sequence", "top_entropy_quantile": 0.5,
                     "advantage_estimator": "reinforce_pp", "dynamic_sampling": True, "rewards": HALF})
    rec = fit(module, plugins=[FP4Precision(dtype="float32")])
    assert "entropy_selection/frac_tokens" in rec.metrics[-1]


# --------------------------------------------------------------------------- bad combinations
@pytest.mark.parametrize("kwargs,match", [
    (dict(advantage_estimator="rloo"), "scale_rewards to none"),
    (dict(advantage_estimator="ppo"), "advantage_estimator='ppo'"),
    (dict(importance_sampling_level="group"), "importance_sampling_level"),
    (dict(loss_type="cispo"), "eps_high"),
    (dict(loss_type="cispo", eps_high=0.28), "eps_high >= 1"),
    (dict(top_entropy_quantile=1.5), "top_entropy_quantile"),
    (dict(max_resample_batches=-1), "max_resample_batches"),
])
def test_bad_switches_fail_before_training_with_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        GRPO(**{**BASE, **kwargs})
    assert "\n" not in str(err.value)


def test_dynamic_sampling_refuses_sharded_strategies_before_training():
    module = GRPO(**{**BASE, "dynamic_sampling": True})

    class FSDPStrategyStandIn:
        config = None

    module._trainer = type("T", (), {"strategy": FSDPStrategyStandIn(), "datamodule": None})()
    with pytest.raises(ValueError, match="FSDP"):
        module.on_fit_start()


@pytest.mark.parametrize("flags,expected", [
    (["--model.advantage_estimator=rloo"], "error: model.advantage_estimator=rloo: set model.scale_rewards to none"),
    (["--model.loss_type=cispo"], "error: model.loss_type=cispo caps the importance weight at model.eps_high"),
])
def test_bad_switch_is_one_error_line_from_the_cli(flags, expected, capsys, monkeypatch):
    from lit_reason.app.cli import main

    monkeypatch.setattr("sys.argv", ["lit-reason"])
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model", "GRPO", "--data", "ToyDataModule", *flags, "--trainer.logger=false",
              "--trainer.enable_progress_bar=false", "--trainer.max_steps=1"])
    assert done.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_a_switch_with_no_effect_on_policy_says_so_once():
    import warnings

    from lit_reason.modules import GRPO

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GRPO(model="tiny", importance_sampling_level="sequence", eps_high=0.28)
    notes = [str(w.message) for w in caught if "acts only off-policy" in str(w.message)]
    assert len(notes) == 2 and "GSPO" in notes[0] and "clipping" in notes[1]
    for off_policy in ({"num_iterations": 2}, {"minibatch_size": 2}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            GRPO(model="tiny", importance_sampling_level="sequence", eps_high=0.28, **off_policy)
        assert not [w for w in caught if "acts only off-policy" in str(w.message)]
