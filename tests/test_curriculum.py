"""DifficultyCurriculum: level-up / stage rules on fake metrics, then a real Lightning run whose
batches follow the level, and a checkpoint resume that keeps both the level and the streak."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from callbacks.difficulty_curriculum import DifficultyCurriculum
from datamodules.enigmata import base
from datamodules.enigmata.base import Task
from datamodules.enigmata.datamodule import EnigmataDataModule


class ToyWord(Task):
    name, category = "toy_word", "Crypto"
    presets = {"easy": {"n": 3}, "medium": {"n": 5}, "hard": {"n": 9}}

    def build(self, rng, n):
        word = "".join(rng.choice("abcdef") for _ in range(n))
        return f"Repeat {word}.", word, {"word": word}

    def verify(self, answer, metadata):
        return answer == metadata["word"]


class ToyBits(ToyWord):
    name, category = "toy_bits", "Logic"


@pytest.fixture(autouse=True)
def toys():
    saved = dict(base.TASKS)
    base.TASKS.clear()
    base.TASKS.update({"toy_word": ToyWord(), "toy_bits": ToyBits()})
    try:
        yield
    finally:
        base.TASKS.clear()
        base.TASKS.update(saved)


class FakeModule:
    def __init__(self):
        self.logged: list[tuple[str, float]] = []

    def log(self, name, value, **kwargs):
        self.logged.append((name, value))


def fake_trainer(dm, rank0_metrics=None):
    """callback_metrics are this rank's values; the strategy's broadcast returns rank 0's."""
    strategy = SimpleNamespace(broadcast=lambda obj, src=0: obj if rank0_metrics is None else dict(rank0_metrics))
    return SimpleNamespace(callback_metrics={}, datamodule=dm, strategy=strategy)


def run_checks(cb, trainer, module, values, key="accuracy"):
    for v in values:
        trainer.callback_metrics[key] = torch.tensor(v)
        cb.on_train_batch_end(trainer, module, None, None, 0)


def test_level_up_after_patience_consecutive_checks():
    dm = EnigmataDataModule(difficulty="easy", eval_per_task=0)
    cb, module = DifficultyCurriculum(threshold=0.8, patience=3), FakeModule()
    trainer = fake_trainer(dm)
    run_checks(cb, trainer, module, [0.9, 0.9, 0.5, 0.9, 0.9])  # the dip restarts the streak
    assert dm.mean_level() == 0 and cb.streak == 2
    run_checks(cb, trainer, module, [0.8])  # >= threshold counts
    assert {dm.level_of(t) for t in dm.universe} == {"medium"} and cb.streak == 0
    levels = [v for k, v in module.logged if k == "curriculum/level"]
    assert levels == [0, 0, 0, 0, 0, 1]
    run_checks(cb, trainer, module, [1.0] * 6)
    assert dm.mean_level() == 2
    run_checks(cb, trainer, module, [1.0] * 3)  # already hard: stays hard, no error
    assert dm.mean_level() == 2


def test_per_task_levels_move_independently():
    dm = EnigmataDataModule(difficulty="easy", eval_per_task=0)
    cb = DifficultyCurriculum(per_task=True, threshold=0.7, patience=2)
    trainer, module = fake_trainer(dm), FakeModule()
    for word_acc, bits_acc in [(0.9, 0.2), (0.9, 0.9), (0.1, 0.9)]:
        trainer.callback_metrics.update({"accuracy/task/toy_word": word_acc, "accuracy/task/toy_bits": bits_acc})
        cb.on_train_batch_end(trainer, module, None, None, 0)
    assert dm.level_of("toy_word") == "medium" and dm.level_of("toy_bits") == "medium"
    assert cb.task_streaks == {"toy_word": 0, "toy_bits": 0}
    trainer.callback_metrics.update({"accuracy/task/toy_word": 0.95, "accuracy/task/toy_bits": 0.0})
    for _ in range(2):
        cb.on_train_batch_end(trainer, module, None, None, 0)
    assert dm.level_of("toy_word") == "hard" and dm.level_of("toy_bits") == "medium"


def test_stages_advance_by_steps_then_by_accuracy():
    stages = [
        {"tasks": ["toy_word"], "steps": 2},
        {"tasks": ["toy_bits"], "until_accuracy": 0.6},
        {"tasks": ["toy_word", "toy_bits"]},
    ]
    dm = EnigmataDataModule(stages=stages, difficulty="easy", eval_per_task=0)
    cb = DifficultyCurriculum(threshold=0.9, patience=2)
    trainer, module = fake_trainer(dm), FakeModule()
    run_checks(cb, trainer, module, [0.0])
    assert dm.current_stage == 0
    run_checks(cb, trainer, module, [0.0])
    assert dm.current_stage == 1 and dm.active_tasks == ["toy_bits"]
    run_checks(cb, trainer, module, [0.7, 0.5, 0.7])
    assert dm.current_stage == 1
    run_checks(cb, trainer, module, [0.7])
    assert dm.current_stage == 2 and dm.mean_level() == 0  # 0.7 < threshold: no level-up on the way
    run_checks(cb, trainer, module, [0.95, 0.95])
    assert dm.current_stage == 2 and dm.mean_level() == 1  # last stage: accuracy raises difficulty
    assert [v for k, v in module.logged if k == "curriculum/stage"] == [0, 1, 1, 1, 1, 2, 2, 2]


def test_only_rank_zero_metrics_decide():
    dm = EnigmataDataModule(difficulty="easy", eval_per_task=0)
    cb = DifficultyCurriculum(patience=1)
    trainer = fake_trainer(dm, rank0_metrics={"accuracy": 0.1})
    run_checks(cb, trainer, FakeModule(), [1.0, 1.0])  # this rank is above, rank 0 is not
    assert dm.mean_level() == 0


def test_epoch_interval_checks_only_at_epoch_end():
    dm = EnigmataDataModule(difficulty="easy", eval_per_task=0)
    cb = DifficultyCurriculum(interval="epoch", patience=1)
    trainer, module = fake_trainer(dm), FakeModule()
    run_checks(cb, trainer, module, [1.0] * 5)
    assert dm.mean_level() == 0
    cb.on_train_epoch_end(trainer, module)
    assert dm.mean_level() == 1


def test_validation_interval_reads_group_accuracies_after_validation():
    dm = EnigmataDataModule(difficulty="easy", eval_per_task=0)
    cb = DifficultyCurriculum(monitor="val/acc", interval="validation", per_task=True, patience=1)
    trainer, module = fake_trainer(dm), FakeModule()
    trainer.callback_metrics.update({"val/acc/task/toy_word": 0.9, "val/acc/task/toy_bits": 0.3})
    run_checks(cb, trainer, module, [1.0] * 3)  # train batches do not check
    trainer.sanity_checking = True
    cb.on_validation_end(trainer, module)  # the sanity check does not count
    assert dm.mean_level() == 0
    trainer.sanity_checking = False
    cb.on_validation_end(trainer, module)
    assert (dm.level_of("toy_word"), dm.level_of("toy_bits")) == ("medium", "easy")


def test_missing_metric_warns_and_changes_nothing():
    dm = EnigmataDataModule(difficulty="easy", eval_per_task=0)
    cb = DifficultyCurriculum(monitor="train/accuracy", patience=1)
    trainer = fake_trainer(dm)
    with pytest.warns(UserWarning, match="train/accuracy"):
        run_checks(cb, trainer, FakeModule(), [1.0, 1.0], key="accuracy")
    assert dm.mean_level() == 0


def test_callback_state_round_trip():
    dm = EnigmataDataModule(difficulty="easy", eval_per_task=0)
    cb = DifficultyCurriculum(patience=3)
    run_checks(cb, fake_trainer(dm), FakeModule(), [0.9, 0.9])
    restored = DifficultyCurriculum(patience=3)
    restored.load_state_dict(cb.state_dict())
    assert restored.streak == 2
    run_checks(restored, fake_trainer(dm), FakeModule(), [0.9])
    assert dm.mean_level() == 1


def test_bad_arguments_and_datamodule():
    with pytest.raises(ValueError, match="interval"):
        DifficultyCurriculum(interval="batch")
    with pytest.raises(ValueError, match="patience"):
        DifficultyCurriculum(patience=0)
    with pytest.raises(ValueError, match="needs a DataModule with a curriculum"):
        DifficultyCurriculum().on_fit_start(SimpleNamespace(datamodule=L.LightningDataModule()), None)


# ---- a real Trainer ------------------------------------------------------------------------
class AccuracyLogger(L.LightningModule):
    """Logs accuracy 1.0 every step and records the difficulty of every batch it trains on."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []

    def training_step(self, batch, batch_idx):
        levels = {p.difficulty for p in batch}
        assert len(levels) == 1
        self.seen.append(levels.pop())
        self.log("accuracy", 1.0)
        return (self.w**2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(max_steps, ckpt_path=None):
    dm = EnigmataDataModule(difficulty="easy", eval_per_task=0, train_size=64, batch_size=2)
    module, cb = AccuracyLogger(), DifficultyCurriculum(patience=2)
    trainer = L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[cb],
    )
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return trainer, module, dm, cb


def test_real_trainer_batches_follow_the_level_and_resume_keeps_it(tmp_path):
    trainer, module, dm, cb = fit(6)
    # patience 2 at accuracy 1.0: level up after batches 2 and 4, seen from the next batch on
    assert module.seen == ["easy", "easy", "medium", "medium", "hard", "hard"]
    assert float(trainer.callback_metrics["curriculum/level"]) == 2.0

    trainer, module, dm, cb = fit(3)  # stops at medium with a streak of 1
    assert module.seen == ["easy", "easy", "medium"] and cb.streak == 1
    path = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(path)
    trainer, module, dm, cb = fit(5, ckpt_path=path)
    # restored level (medium) AND streak (1): batch 4 completes the streak, batch 5 is hard
    assert module.seen == ["medium", "hard"]
    assert dm.state_dict()["levels"] == {"toy_word": "hard", "toy_bits": "hard"}
