"""Kill a run mid-training, resume from its last checkpoint: it continues exactly.

The reference is an uninterrupted run with the same seed. After the resume point the per-step
loss, reward, prompts and global-RNG draws must match, and at the end the parameters, the
optimizer state and the step count must be identical.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from callbacks.difficulty_curriculum import DifficultyCurriculum
from datamodules.enigmata.datamodule import EnigmataDataModule
from datamodules.resumable import EpochRandomSampler, ResumableDataLoader
from datamodules.toy import ToyDataModule
from lit_reason.modules import GRPO

TOTAL_STEPS = 7  # toy data: 8 prompts / batch 2 = 4 batches per epoch, so 7 steps cross an epoch


class Killed(RuntimeError):
    """Stands for the job being killed."""


class Recorder(Callback):
    """Per step: prompts, loss, reward, one draw of the global torch RNG; optionally dies."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at, self.rows = kill_at, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.kill_at is not None and trainer.global_step == self.kill_at:
            raise Killed(f"killed before step {self.kill_at + 1}")
        self._draw = float(torch.rand(()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        m = trainer.callback_metrics
        self.rows[trainer.global_step] = {
            "prompts": [p.prompt for p in batch],
            "loss": float(m["loss"]),
            "reward": float(m["reward"]),
            "grad_norm": float(m["grad_norm"]),
            "rng": self._draw,
            "level": getattr(trainer.datamodule, "state", None) and dict(trainer.datamodule.state.levels),
        }


def toy_module(**overrides) -> GRPO:
    # beta > 0 makes the logged loss non-zero (on-policy GRPO with no KL term logs exactly 0)
    args = dict(model="tiny", num_generations=2, max_new_tokens=6, lr=1e-2, lr_schedule="cosine", warmup_steps=2,
                beta=0.1)
    return GRPO(**{**args, **overrides})


def trainer(tmp_path, callbacks, every: int, max_steps: int = TOTAL_STEPS) -> L.Trainer:
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=every, save_last=True, save_top_k=-1)
    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     callbacks=[*callbacks, ckpt], default_root_dir=tmp_path)


def run(tmp_path, make_module, make_data, extra=(), kill_at=None, resume=False, every=1, perturbed=None):
    """One fit; returns (module, recorder, trainer). On resume the ``perturbed(module)`` parameters
    (default: all) start elsewhere, so only the checkpoint can make the run match."""
    L.seed_everything(0)
    module, data, rec = make_module(), make_data(), Recorder(kill_at)
    if resume:
        with torch.no_grad():
            for p in (perturbed or (lambda m: m.parameters()))(module):
                p.add_(1.0)
    t = trainer(tmp_path, [rec, *[cls() for cls in extra]], every)
    if kill_at is not None:
        with pytest.raises(Killed):
            t.fit(module, datamodule=data)
    else:
        t.fit(module, datamodule=data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt") if resume else None)
    return module, rec, t


def assert_same_after(reference: Recorder, resumed: Recorder, start: int) -> None:
    steps = [s for s in reference.rows if s > start]
    assert steps and sorted(resumed.rows) == steps, (sorted(resumed.rows), steps)
    for s in steps:
        ref, got = reference.rows[s], resumed.rows[s]
        assert got["prompts"] == ref["prompts"], f"step {s}: resumed run trained on other problems"
        assert got["loss"] == pytest.approx(ref["loss"], abs=1e-6), f"step {s}: loss differs"
        assert got["reward"] == pytest.approx(ref["reward"], abs=1e-6), f"step {s}: reward differs"
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], abs=1e-6), f"step {s}: gradient differs"
        assert got["rng"] == ref["rng"], f"step {s}: global RNG not restored"
        assert got["level"] == ref["level"], f"step {s}: curriculum level differs"


def assert_same_state(a: GRPO, ta: L.Trainer, b: GRPO, tb: L.Trainer) -> None:
    assert ta.global_step == tb.global_step == TOTAL_STEPS
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
    sa, sb = ta.optimizers[0].state_dict(), tb.optimizers[0].state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for key in sa["state"]:
        for field in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sa["state"][key][field], sb["state"][key][field], rtol=0, atol=1e-6)
    assert ta.lr_scheduler_configs[0].scheduler.last_epoch == tb.lr_scheduler_configs[0].scheduler.last_epoch


@pytest.mark.parametrize("kill_at", [2, 4, 5], ids=["mid-epoch0", "epoch-boundary", "mid-epoch1"])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, kill_at):
    def make_data():
        return ToyDataModule(train_size=8, val_size=0, batch_size=2)

    module_a, rec_a, t_a = run(tmp_path / "a", toy_module, make_data)
    assert len({tuple(r["prompts"]) for r in rec_a.rows.values()}) > 3  # the batches do differ
    assert len({round(r["loss"], 6) for r in rec_a.rows.values()}) > 3  # and so do the losses

    run(tmp_path / "b", toy_module, make_data, kill_at=kill_at)
    module_b, rec_b, t_b = run(tmp_path / "b", toy_module, make_data, resume=True)
    assert_same_after(rec_a, rec_b, start=kill_at)
    assert_same_state(module_a, t_a, module_b, t_b)
    assert module_b.total_tokens == module_a.total_tokens


def test_curriculum_level_and_streak_survive_resume(tmp_path):
    """Difficulty rises every 2 steps (threshold 0, patience 2): killed after step 3 with a streak
    of 1 pending, the resumed run must still level up after step 4 (step 5 draws hard puzzles) and
    draw the same puzzles as the uninterrupted run."""

    def make_data():
        return EnigmataDataModule(tasks=["game24", "magic_square"], difficulty="easy", train_size=40,
                                  eval_per_task=0, batch_size=2)

    def make_module():
        return toy_module(max_prompt_length=48, max_new_tokens=4)

    class Curriculum(DifficultyCurriculum):
        def __init__(self):
            super().__init__(monitor="reward", threshold=0.0, patience=2)

    _, rec_a, _ = run(tmp_path / "a", make_module, make_data, extra=[Curriculum])
    levels = [rec_a.rows[s]["level"]["game24"] for s in sorted(rec_a.rows)]
    assert levels[:6] == ["easy", "easy", "medium", "medium", "hard", "hard"], levels  # level each batch was drawn at

    run(tmp_path / "b", make_module, make_data, extra=[Curriculum], kill_at=3)
    _, rec_b, t_b = run(tmp_path / "b", make_module, make_data, extra=[Curriculum], resume=True)
    assert_same_after(rec_a, rec_b, start=3)
    assert t_b.datamodule.state.levels == {"game24": "hard", "magic_square": "hard"}


def test_resumable_loader_skips_served_batches_by_index():
    built = []

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            built.append(i)
            return i

    data = Items()
    loader = ResumableDataLoader(data, batch_size=2, sampler=EpochRandomSampler(data, seed=3), drop_last=True)
    loader.sampler.set_epoch(1)
    full = [b.tolist() for b in loader]
    assert sorted(sum(full, [])) == list(range(10))
    assert loader.state_dict()["batches_served"] == 5

    fresh = ResumableDataLoader(data, batch_size=2, sampler=EpochRandomSampler(data, seed=99), drop_last=True)
    fresh.load_state_dict({"batches_served": 2, "seed": 3})
    fresh.sampler.set_epoch(1)
    built.clear()
    rest = [b.tolist() for b in fresh]
    assert rest == full[2:]
    assert sorted(built) == sorted(sum(full[2:], []))  # skipped items are never built
    assert fresh.state_dict()["batches_served"] == 5
    fresh.load_state_dict({"batches_served": 5})  # finished epoch: the next pass is whole
    assert len(list(fresh)) == 5
