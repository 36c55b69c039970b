"""DAPO dynamic sampling: the group bookkeeping by hand, rollout merging, and in the module: the
plain path is unchanged, only informative groups train, counts are logged, resume and DDP exact."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zlib

import lightning as L
import pytest
import torch

from datamodules import ToyDataModule
from lit_reason.rollout_step.dynamic_sampling import concat_rollouts, fill_informative_groups, refill_indices, step_metrics
from lit_reason.modules import GRPO
from lit_reason.rollout import Rollout
from tests.test_resume import assert_same_after, assert_same_state, run as resume_run, toy_module

PAD = 0


def rollout_of(rows: list[str], width: int, prompt_width: int = 2, hidden: int = 0) -> Rollout:
    """Rows named by their text; token ids encode (row, position) so merges can be checked."""
    n = len(rows)
    ids = torch.arange(1, n * width + 1).reshape(n, width) + 1000
    mask = torch.ones(n, width, dtype=torch.long)
    mask[:, -1] = 0  # the last position is padding in every row
    extras = {"latents": torch.ones(n, width, hidden)} if hidden else {}
    if hidden:
        extras["mix"] = torch.ones(n, width, dtype=torch.bool)
    return Rollout(torch.full((n, prompt_width), 7), torch.ones(n, prompt_width, dtype=torch.long), ids, mask,
                   -torch.ones(n, width), torch.zeros(n, dtype=torch.bool), list(rows), seconds=1.5, extras=extras)


def scripted(draws):
    """``draw(attempt)`` replaying ``(problems, rewards)`` per attempt, G = 2, texts '<problem><i>'."""
    calls = []

    def draw(attempt):
        calls.append(attempt)
        problems, rewards = draws[attempt]
        texts = [f"{p}{i}" for p in problems for i in range(2)]
        return problems, rollout_of(texts, width=3 + attempt), torch.tensor(rewards)

    return draw, calls


def test_fill_keeps_informative_groups_in_order_and_refills():
    # attempt 0: a (1,1) constant, b (0,1) kept, c (0,0) constant; attempt 1: d kept, e constant, f kept
    draw, calls = scripted({0: ("abc", [1, 1, 0, 1, 0, 0]), 1: ("def", [0, 1, 1, 1, 1, 0])})
    filled = fill_informative_groups(draw, batch_size=3, group_size=2, max_resample_batches=4, pad_id=PAD)
    assert calls == [0, 1]  # stopped once full
    assert filled.problems == ["b", "d", "f"]
    assert filled.rollout.texts == ["b0", "b1", "d0", "d1", "f0", "f1"]
    assert filled.trained_rows.tolist() == [True] * 6
    assert (filled.generated_groups, filled.kept_groups, filled.rollout_batches) == (6, 3, 2)
    assert filled.rollout.seconds == 3.0  # both rollout batches' generation time


def test_fill_drops_surplus_informative_groups():
    draw, _ = scripted({0: ("abc", [1, 1, 0, 1, 0, 0]), 1: ("def", [0, 1, 0, 1, 1, 0])})
    filled = fill_informative_groups(draw, 3, 2, 4, PAD)
    assert filled.problems == ["b", "d", "e"] and filled.kept_groups == 3  # f was informative too, not needed


def test_fill_at_the_cap_pads_with_uninformative_groups_flagged_out():
    draw, calls = scripted({0: ("abc", [1, 1, 0, 1, 0, 0]), 1: ("def", [0, 0, 1, 1, 1, 1])})
    filled = fill_informative_groups(draw, 3, 2, max_resample_batches=1, pad_id=PAD)
    assert calls == [0, 1]
    assert filled.problems == ["b", "a", "c"]  # the one informative group, then the first uninformative ones
    assert filled.trained_rows.tolist() == [True, True, False, False, False, False]
    assert (filled.generated_groups, filled.kept_groups, filled.rollout_batches) == (6, 1, 2)
    none, calls = scripted({0: ("abc", [1, 1, 0, 1, 0, 0])})
    assert fill_informative_groups(none, 3, 2, max_resample_batches=0, pad_id=PAD).kept_groups == 1 and calls == [0]


def test_step_metrics_count_the_step_and_average_every_generated_reward():
    draw, _ = scripted({0: ("abc", [1, 1, 0, 1, 0, 0]), 1: ("def", [0, 0, 1, 1, 1, 1])})
    filled = fill_informative_groups(draw, 3, 2, max_resample_batches=1, pad_id=PAD)
    generated = [torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), torch.tensor([0.0, float("nan"), 1.0, 1.0, 1.0, 1.0])]
    metrics = step_metrics(filled, 3, generated, {"generated_groups": 10, "kept_groups": 4})
    # 11 non-NaN rewards, 7 of them 1: the abstained (NaN) one is left out of the mean
    assert metrics.pop("dynamic_sampling/generated_reward_mean") == pytest.approx(7 / 11)
    assert metrics == {"dynamic_sampling/generated_groups": 6.0,
                       "dynamic_sampling/kept_groups": 1.0, "dynamic_sampling/padded_groups": 2.0,
                       "dynamic_sampling/rollout_batches": 2.0, "dynamic_sampling/total_generated_groups": 10.0,
                       "dynamic_sampling/total_kept_groups": 4.0}


def test_fill_returns_the_first_rollout_itself_when_every_group_is_informative():
    draw, calls = scripted({0: ("ab", [0, 1, 0.5, 0.2])})
    filled = fill_informative_groups(draw, 2, 2, 4, PAD)
    assert calls == [0] and filled.rollout.texts == ["a0", "a1", "b0", "b1"] and filled.rollout.seconds == 1.5
    assert filled.rollout.completion_ids.shape == (4, 3) and filled.trained_rows.all()


def test_concat_rollouts_repads_prompts_left_and_completions_right():
    a = rollout_of(["x", "y"], width=3, prompt_width=2, hidden=2)
    b = rollout_of(["z"], width=5, prompt_width=4, hidden=2)
    m = concat_rollouts([a, b], pad_id=PAD)
    assert m.texts == ["x", "y", "z"]
    assert m.prompt_ids.shape == (3, 4) and m.completion_ids.shape == (3, 5)
    assert m.prompt_mask.tolist()[0] == [0, 0, 1, 1] and m.prompt_ids[0, :2].tolist() == [PAD, PAD]  # left pad
    assert m.completion_ids[0].tolist() == a.completion_ids[0].tolist() + [PAD, PAD]  # right pad
    assert m.completion_mask[0].tolist() == [1, 1, 0, 0, 0] and m.completion_mask[2].tolist() == [1, 1, 1, 1, 0]
    assert m.logprobs[0].tolist() == [-1, -1, -1, 0, 0]
    assert m.extras["latents"].shape == (3, 5, 2) and m.extras["latents"][0, 3:].abs().sum() == 0
    assert m.extras["mix"].dtype == torch.bool and m.extras["mix"][1].tolist() == [True] * 3 + [False] * 2
    torch.testing.assert_close(m.completion_ids[2], b.completion_ids[0])


def test_refill_indices_are_a_pure_function_of_seed_step_rank_attempt():
    first = refill_indices(100, 8, seed=0, step=3, rank=0, attempt=1)
    assert first == refill_indices(100, 8, 0, 3, 0, 1) and len(set(first)) == 8 and all(0 <= i < 100 for i in first)
    others = [refill_indices(100, 8, 0, 4, 0, 1), refill_indices(100, 8, 0, 3, 1, 1), refill_indices(100, 8, 0, 3, 0, 2),
              refill_indices(100, 8, 1, 3, 0, 1)]
    assert all(o != first for o in others)
    assert len(refill_indices(3, 8, 0, 0, 0, 1)) == 8  # a dataset smaller than the draw: with replacement


@pytest.mark.integration
def test_refill_indices_are_the_same_in_every_process():
    """A resumed run is a new process: the draw must not depend on Python's per-process hash salt."""
    code = "from lit_reason.rollout_step.dynamic_sampling import refill_indices; print(refill_indices(1000, 6, 0, 3, 1, 2))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(salt)}).stdout for salt in (1, 2)}
    assert outs == {f"{refill_indices(1000, 6, 0, 3, 1, 2)}\n"}


# --------------------------------------------------------------------------- in the module
def half_constant(problem, completion, score):
    """char_fill's reward for the letters f-j; a constant 0 for a-e (their groups carry no signal)."""
    return score if problem.prompt.split()[3] in "fghij" else 0.0


HALF = {"tests.test_dynamic_sampling:half_constant": 1.0}


class Recorder(L.Callback):
    def __init__(self):
        self.rows, self.metrics, self.losses = [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append(outputs)
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def fit(module, steps, batch_size=2, **data):
    rec = Recorder()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    trainer.fit(module, ToyDataModule(batch_size=batch_size, val_size=0, **data))
    return rec


def tiny(**kw):
    return GRPO(**{**dict(model="tiny", num_generations=4, max_new_tokens=8, lr=1e-2, prompt_format="plain"), **kw})


def text_hash(problem, completion, score):
    """A reward that (practically) never ties within a group: a hash of the completion."""
    return (zlib.crc32(completion.encode()) % 1000) / 1000


def test_dynamic_sampling_changes_nothing_when_every_group_is_informative():
    """No group is constant, so the run equals the plain one exactly."""
    runs = []
    for dynamic in (False, True):
        L.seed_everything(0)
        module = tiny(dynamic_sampling=dynamic, beta=0.1, rewards={"tests.test_dynamic_sampling:text_hash": 1.0})
        rec = fit(module, steps=3)
        runs.append((module, rec))
    (plain, rec_p), (dyn, rec_d) = runs
    assert [m["loss"] for m in rec_p.metrics] == [m["loss"] for m in rec_d.metrics]
    for a, b in zip(plain.policy.parameters(), dyn.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert rec_d.metrics[-1]["dynamic_sampling/kept_groups"] == 2.0
    assert rec_d.metrics[-1]["dynamic_sampling/rollout_batches"] == 1.0


def test_only_informative_groups_train_and_the_counts_are_logged():
    L.seed_everything(0)
    module = tiny(dynamic_sampling=True, rewards=HALF, max_resample_batches=8)
    rec = fit(module, steps=3, batch_size=3)
    generated = kept = 0
    for out, m in zip(rec.rows, rec.metrics):
        groups = out["rewards"].reshape(-1, 4)
        assert groups.shape[0] == 3 and len(out["problems"]) == 12
        assert all(g.max() > g.min() for g in groups)  # every trained group disagrees
        assert all(p.prompt.split()[3] in "fghij" for p in out["problems"])
        assert m["dynamic_sampling/kept_groups"] == 3.0 and m["dynamic_sampling/padded_groups"] == 0.0
        assert m["dynamic_sampling/generated_groups"] == 3.0 * m["dynamic_sampling/rollout_batches"]
        generated += m["dynamic_sampling/generated_groups"]
        kept += m["dynamic_sampling/kept_groups"]
    assert generated > kept  # some rollouts were spent on uninformative groups (a-e)
    assert module.dynamic_sampling_totals == {"generated_groups": generated, "kept_groups": kept}
    assert rec.metrics[-1]["dynamic_sampling/total_generated_groups"] == generated


def always_zero(problem, completion, score):
    return 0.0


def test_at_the_cap_padding_groups_are_masked_out_of_the_loss():
    L.seed_everything(0)
    module = tiny(dynamic_sampling=True, rewards={"tests.test_dynamic_sampling:always_zero": 1.0},
                  max_resample_batches=2, beta=0.1)
    before = [p.detach().clone() for p in module.policy.parameters()]
    rec = fit(module, steps=1)
    m = rec.metrics[-1]
    assert (m["dynamic_sampling/kept_groups"], m["dynamic_sampling/padded_groups"]) == (0.0, 2.0)
    assert m["dynamic_sampling/generated_groups"] == 6.0 and m["dynamic_sampling/rollout_batches"] == 3.0
    # every row masked: no policy-gradient and no KL term reaches the weights
    assert m["loss"] == 0.0
    for a, b in zip(before, module.policy.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)


def test_bad_options_fail_before_training():
    with pytest.raises(ValueError, match="max_resample_batches"):
        tiny(dynamic_sampling=True, max_resample_batches=-1)


def test_killed_and_resumed_dynamic_sampling_run_matches_uninterrupted(tmp_path):
    def make_module():
        return toy_module(dynamic_sampling=True, rewards=HALF, max_resample_batches=6)

    def make_data():
        return ToyDataModule(train_size=8, val_size=0, batch_size=2)

    module_a, rec_a, t_a = resume_run(tmp_path / "a", make_module, make_data)
    assert module_a.dynamic_sampling_totals["generated_groups"] > module_a.dynamic_sampling_totals["kept_groups"]
    resume_run(tmp_path / "b", make_module, make_data, kill_at=4)
    module_b, rec_b, t_b = resume_run(tmp_path / "b", make_module, make_data, resume=True)
    assert_same_after(rec_a, rec_b, start=4)
    assert_same_state(module_a, t_a, module_b, t_b)
    assert module_b.dynamic_sampling_totals == module_a.dynamic_sampling_totals


class SaveRank(L.Callback):
    def __init__(self, path):
        self.path, self.prompts = path, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.prompts.append([p.prompt for p in outputs["problems"][::pl_module.hparams.num_generations]])

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.policy.parameters()])
        with open(self.path / f"rank{trainer.global_rank}", "wb") as f:
            pickle.dump((flat, self.prompts, dict(pl_module.dynamic_sampling_totals)), f)


@pytest.mark.integration
def test_ddp_ranks_fill_their_own_batches_and_stay_identical(tmp_path):
    """Also runs top_entropy_quantile's cross-rank gather of the entropies (the same 2 processes)."""
    L.seed_everything(0)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4, lr=1e-2, prompt_format="plain",
                  dynamic_sampling=True, rewards=HALF, max_resample_batches=6, top_entropy_quantile=0.5)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[SaveRank(tmp_path)])
    trainer.fit(module, ToyDataModule(batch_size=2, val_size=0))
    (p0, prompts0, totals0), (p1, prompts1, totals1) = (pickle.load(open(tmp_path / f"rank{r}", "rb")) for r in range(2))
    torch.testing.assert_close(p0, p1, rtol=0, atol=0)  # gradients synchronised although the batches differ
    assert prompts0 != prompts1
    for prompts in prompts0 + prompts1:
        assert len(prompts) == 2
    assert totals0 == totals1  # summed over the ranks, so rank 0's checkpoint holds the run's totals
    assert totals0["generated_groups"] > totals0["kept_groups"]


CALLS = {"reward": 0}


def counting_half_constant(problem, completion, score):
    """half_constant, counting its calls."""
    CALLS["reward"] += 1
    return half_constant(problem, completion, score)


def test_each_completion_is_scored_once_with_refills(monkeypatch):
    """The reward source and the verifier run once per generated completion: the rows kept from
    the refills are not scored again for the update, and the rewards trained on are theirs."""
    from lit_reason.tasks.problem import TextProblem

    verified = []
    score = TextProblem.score
    monkeypatch.setattr(TextProblem, "score", lambda self, completion: verified.append(1) or score(self, completion))
    CALLS["reward"] = 0
    L.seed_everything(0)
    module = tiny(dynamic_sampling=True, rewards={"tests.test_dynamic_sampling:counting_half_constant": 1.0},
                  max_resample_batches=8)
    rec = fit(module, steps=3, batch_size=3)
    assert sum(m["dynamic_sampling/rollout_batches"] for m in rec.metrics) > 3  # refills happened
    completions = module.dynamic_sampling_totals["generated_groups"] * 4
    assert CALLS["reward"] == completions and len(verified) == completions
    monkeypatch.undo()
    for out in rec.rows:  # the kept rewards belong to the kept rows
        again = [half_constant(p, t, p.score(t)) for p, t in zip(out["problems"], out["rollout"].texts)]
        assert out["rewards"].tolist() == pytest.approx(again)
        assert out["scores"] == [p.score(t) for p, t in zip(out["problems"], out["rollout"].texts)]
