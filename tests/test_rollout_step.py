"""The rollout step is a part of its own: a replacement drives the training step without the module
changing, and what it hands over (rows, trained rows, metrics) is what the step trains and logs."""

from dataclasses import replace

import lightning as L
import pytest
import torch

from datamodules import ToyDataModule
from datamodules.toy import make_toy_problem
from lit_reason.modules import GRPO, Intuitor
from lit_reason.rollout import Rollout
from lit_reason.rollout_step import DynamicSampling, RolloutStep, SampleNow, ScoredRollout
from lit_reason.rollout_step.metrics import scored_rollout_metrics
from lit_reason.tasks.rewards import score_completions, source_metrics


class Outputs(L.Callback):
    def __init__(self):
        self.outputs, self.metrics = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.outputs.append(outputs)
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def fit(module, steps=2):
    rec = Outputs()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    trainer.fit(module, ToyDataModule(batch_size=2, val_size=0))
    return rec


def tiny(cls=GRPO, **kw):
    return cls(**{**dict(model="tiny", num_generations=4, max_new_tokens=6, lr=1e-2, prompt_format="plain"), **kw})


class Replay(RolloutStep):
    """Hands back one stored rollout every step (what an off-policy buffer or a queue would do)."""

    def __init__(self, scored: ScoredRollout, trained_rows=None):
        self.scored, self.trained_rows, self.calls = scored, trained_rows, 0

    def __call__(self, module, batch):
        self.calls += 1
        return replace(self.scored, trained_rows=self.trained_rows, metrics={"replay/calls": float(self.calls)})


def stored_rollout(module):
    L.seed_everything(1)
    problems = [make_toy_problem("char_fill", 5, i, "abcdefghij") for i in range(2)]
    return SampleNow()(module, problems)


def params(module):
    return torch.cat([p.detach().flatten().clone() for p in module.policy.parameters()])


@pytest.mark.parametrize("cls", [GRPO, Intuitor])
def test_a_replacement_step_drives_training_and_the_module_never_samples(cls, monkeypatch):
    L.seed_everything(0)
    module = tiny(cls)
    scored = stored_rollout(module)
    module.rollout_step = Replay(scored)
    monkeypatch.setattr(module, "generate", lambda *a, **k: pytest.fail("the module sampled by itself"))
    before = params(module)
    rec = fit(module)
    assert [o["rollout"] for o in rec.outputs] == [scored.rollout, scored.rollout]
    assert [o["problems"] for o in rec.outputs] == [scored.rows, scored.rows]
    assert rec.metrics[-1]["replay/calls"] == 2.0  # the step's own metrics are logged with the step
    assert not torch.equal(before, params(module))  # and it trained on the replayed rollout


def test_rows_the_step_keeps_out_of_the_loss_do_not_train():
    L.seed_everything(0)
    module = tiny(beta=0.1)
    scored = stored_rollout(module)
    module.rollout_step = Replay(scored, trained_rows=torch.zeros(len(scored.rollout.texts), dtype=torch.bool))
    before = params(module)
    rec = fit(module, steps=1)
    assert rec.metrics[-1]["loss"] == 0.0
    assert torch.equal(before, params(module))


def test_build_rollout_step_picks_the_step_from_the_settings():
    assert type(tiny().rollout_step) is SampleNow
    step = tiny(dynamic_sampling=True, max_resample_batches=3).rollout_step
    assert isinstance(step, DynamicSampling) and step.max_resample_batches == 3
    assert step.state_dict() == {"dynamic_sampling_totals": {"generated_groups": 0, "kept_groups": 0}}
    step.load_state_dict({"dynamic_sampling_totals": {"generated_groups": 7, "kept_groups": 5}})
    assert step.totals == {"generated_groups": 7, "kept_groups": 5}


def test_sample_now_scores_each_row_against_its_own_problem():
    module = tiny()
    scored = stored_rollout(module)
    assert len(scored.rows) == 8 and scored.rows[:4] == [scored.problems[0]] * 4 and scored.rows[4:] == [scored.problems[1]] * 4
    by_hand = [p.score(t) for p, t in zip(scored.rows, scored.rollout.texts)]
    assert list(scored.scored) == by_hand
    assert scored.scored.per_source["correct"].tolist() == pytest.approx(by_hand)  # the reward source, float32


def hand_rollout(mask_rows, truncated, seconds):
    mask = torch.tensor(mask_rows)
    b, t = mask.shape
    return Rollout(torch.ones(b, 1, dtype=torch.long), torch.ones(b, 1, dtype=torch.long), torch.zeros(b, t, dtype=torch.long),
                   mask, torch.zeros(b, t), torch.tensor(truncated), ["x"] * b, seconds)


def test_scored_rollout_metrics_by_hand():
    rollout = hand_rollout([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], [True, False, False, True], seconds=2.0)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])  # group 1: std of (1, 0) = 0.7071; group 2: 0
    m = scored_rollout_metrics(rollout, rewards, group_size=2)
    assert m["reward_std"] == pytest.approx(0.70710678 / 2)
    assert m["frac_reward_zero_std"] == 0.5
    assert (m["completions/mean_length"], m["completions/min_length"], m["completions/max_length"]) == (2.25, 1.0, 3.0)
    assert m["completions/clipped_ratio"] == 0.5
    assert m["rollout/tokens_per_s"] == 4.5  # 9 tokens in 2 s


def test_reward_source_metrics_by_hand_skip_abstentions():
    per_source = {"a": torch.tensor([1.0, float("nan"), 3.0]), "b": torch.tensor([float("nan")] * 3)}
    m = source_metrics(per_source, {"a": "ValueError: x"}, error_sources=["a"])
    assert m == {"rewards/a/mean": 2.0, "rewards/a/std": pytest.approx(2 ** 0.5), "rewards/a/errors": 1.0,
                 "rewards/b/mean": 0.0, "rewards/b/std": 0.0}


def test_score_completions_runs_each_verifier_once():
    calls = []

    class Counted:
        def score(self, completion):
            calls.append(completion)
            return float(completion == "yes")

    scored = score_completions({"twice": lambda p, c, s: 2 * s}, [Counted(), Counted()], ["yes", "no"])
    assert calls == ["yes", "no"] and list(scored) == [1.0, 0.0]
    assert scored.per_source["twice"].tolist() == [2.0, 0.0]


def test_rows_kept_out_of_the_loss_stay_out_of_batch_advantages_and_the_logged_reward():
    """Review finding 8(c): dynamic sampling's padding groups (trained_rows False) entered the batch
    whitening of reinforce_pp and the logged reward. By hand: the trained group's rewards [1, 0, 0, 1]
    whiten to +-0.5 / (std 0.57735 + 1e-4); the padding group [1, 1, 1, 1] gets 0 and is not logged."""
    from lit_reason.tasks.rewards import ScoredCompletions

    L.seed_everything(0)
    module = tiny(advantage_estimator="reinforce_pp")
    scored = stored_rollout(module)
    values = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    scored = replace(scored, scored=ScoredCompletions(values, {"correct": torch.tensor(values)}, {"correct": {}}))
    module.rollout_step = Replay(scored, trained_rows=torch.tensor([True] * 4 + [False] * 4))
    rec = fit(module, steps=1)
    a = 0.5 / (0.5773502691896258 + 1e-4)
    assert rec.outputs[0]["advantages"].tolist() == pytest.approx([a, -a, -a, a, 0, 0, 0, 0], abs=1e-6)
    assert rec.metrics[-1]["reward"] == pytest.approx(0.5)  # the trained group's mean, not 0.75
    assert rec.metrics[-1]["rewards/correct/mean"] == pytest.approx(0.5)  # the source's too
    assert rec.metrics[-1]["rewards/correct/std"] == pytest.approx(0.5773502691896258)


def test_intuitor_per_source_advantages_leave_the_padding_rows_out_too():
    """The same corner for Intuitor, which whitens each reward source on its own: by hand, source
    ``correct`` (weight 1) [1, 0, 0, 1] whitens to +-0.5 / (0.57735 + 1e-4) and the second source
    (weight 2) [0, 1, 1, 1] to (-0.75, 0.25, 0.25, 0.25) / (std 0.5 + 1e-4); the padding group gets 0
    (with it in the batch, the second source's mean would be 0.375 instead of 0.75)."""
    from lit_reason.tasks.rewards import ScoredCompletions

    other = "tests.test_dynamic_sampling:always_zero"
    L.seed_everything(0)
    module = tiny(Intuitor, advantage_estimator="reinforce_pp", rewards={"self_certainty": 0.0, "correct": 1.0, other: 2.0})
    scored = stored_rollout(module)
    correct = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    second = [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    total = [c + 2 * s for c, s in zip(correct, second)]
    scored = replace(scored, scored=ScoredCompletions(total, {"correct": torch.tensor(correct), other: torch.tensor(second)},
                                                      {"correct": {}, other: {}}))
    module.rollout_step = Replay(scored, trained_rows=torch.tensor([True] * 4 + [False] * 4))
    rec = fit(module, steps=1)
    a = 0.5 / (0.5773502691896258 + 1e-4)
    b = [2 * x / (0.5 + 1e-4) for x in (-0.75, 0.25, 0.25, 0.25)]
    expected = [a + b[0], -a + b[1], -a + b[2], a + b[3], 0, 0, 0, 0]
    assert rec.outputs[0]["advantages"].tolist() == pytest.approx(expected, abs=1e-5)
    # the logged sources: the trained group's means (0.5 and 0.75), not the batch's (0.75 and 0.375)
    assert rec.metrics[-1]["rewards/correct/mean"] == pytest.approx(0.5)
    assert rec.metrics[-1][f"rewards/{other}/mean"] == pytest.approx(0.75)


def test_episodes_and_async_rollouts_together_are_refused_in_one_line():
    with pytest.raises(ValueError, match="set one of them, not both"):
        tiny(episodes={"environment": "retry"}, async_rollouts={"max_staleness": 1})
