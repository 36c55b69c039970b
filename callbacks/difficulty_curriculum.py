"""DifficultyCurriculum: raise puzzle difficulty / advance Multi-stage RL when accuracy passes a bar.

Control callback. It drives any DataModule with the curriculum interface of
:class:`datamodules.enigmata.datamodule.EnigmataDataModule`: ``level_up(task=None) -> bool``,
``advance_stage() -> bool``, ``stage`` (with ``steps`` / ``until_accuracy``), ``active_tasks``
and ``mean_level()``. The DataModule's train stream reads that state live, so the next batches
already follow the new level (see the datamodule docstring).

Rules, checked every train batch (``interval="step"``), every train epoch (``"epoch"``) or after
every validation run (``"validation"``, e.g. ``monitor="val/accuracy"``; with ``per_task`` the
default key then reads the GRPO module's ``val/acc/task/<name>`` group accuracies):
  * stage with ``steps: N``: advance after N train batches in the stage (counted every batch);
  * stage with ``until_accuracy: a``: advance once ``monitor >= a`` for ``patience`` checks in a row;
  * otherwise, with ``raise_difficulty``: level up once ``monitor >= threshold`` for ``patience``
    checks in a row (``per_task``: each task on its own metric ``per_task_key``).
Streaks restart after every change. Under DDP the metric values are taken from rank 0 (broadcast),
so every rank makes the same decision and generates the same items.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

CURRICULUM_METHODS = ("level_up", "advance_stage", "stage", "current_stage", "active_tasks", "mean_level", "level_of")


class DifficultyCurriculum(Callback):
    """Raise difficulty (and advance stages) when a logged accuracy stays above a threshold.

    Args:
        monitor: the logged metric key to watch (a training accuracy in [0, 1]).
        threshold: level up when ``monitor >= threshold`` ...
        patience: ... for this many consecutive checks (train batches or epochs).
        interval: ``"step"`` (check after every train batch), ``"epoch"`` or ``"validation"``.
        per_task: level up each task on its own accuracy, read from ``per_task_key``.
        per_task_key: format of the per-task metric key (fields ``monitor`` and ``task``).
        raise_difficulty: set False to use the callback only to advance stages.
    """

    #: Marker the DataModule looks for to know its stages will advance.
    curriculum_driver = True

    def __init__(
        self,
        monitor: str = "accuracy",
        threshold: float = 0.8,
        patience: int = 1,
        interval: str = "step",
        per_task: bool = False,
        per_task_key: str = "{monitor}/task/{task}",
        raise_difficulty: bool = True,
    ) -> None:
        if interval not in ("step", "epoch", "validation"):
            raise ValueError(f"DifficultyCurriculum.interval must be 'step', 'epoch' or 'validation', got {interval!r}")
        if patience < 1:
            raise ValueError(f"DifficultyCurriculum.patience must be >= 1 check, got {patience}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"DifficultyCurriculum.threshold must be an accuracy in [0, 1], got {threshold}")
        self.monitor, self.threshold, self.patience, self.interval = monitor, float(threshold), int(patience), interval
        self.per_task, self.per_task_key, self.raise_difficulty = per_task, per_task_key, raise_difficulty
        self.streak = 0  # consecutive checks with monitor >= threshold (global mode)
        self.task_streaks: dict[str, int] = {}
        self.stage_streak = 0  # consecutive checks with monitor >= stage.until_accuracy
        self.batches_in_stage = 0
        self._warned_missing: set[str] = set()

    # ---- Lightning hooks ----------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._datamodule(trainer)  # fail early on a DataModule without a curriculum

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        dm = self._datamodule(trainer)
        self.batches_in_stage += 1
        steps = dm.stage.steps
        if steps is not None and self.batches_in_stage >= steps:
            self._advance(dm, f"{steps} batches done")
        elif self.interval == "step":
            self._check(trainer, dm)
        self._log(pl_module, dm)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.interval == "epoch":
            dm = self._datamodule(trainer)
            self._check(trainer, dm)
            self._log(pl_module, dm)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        # no self.log here (Lightning forbids it); the next train batch logs the new level
        if self.interval == "validation" and not getattr(trainer, "sanity_checking", False):
            self._check(trainer, self._datamodule(trainer))

    # ---- decisions ---------------------------------------------------------------------
    def _check(self, trainer: Any, dm: Any) -> None:
        values = self._broadcast(trainer, self._read(trainer, dm))
        acc = values.get(self.monitor)
        until = dm.stage.until_accuracy
        if until is not None:
            self.stage_streak = self.stage_streak + 1 if acc is not None and acc >= until else 0
            if self.stage_streak >= self.patience:
                self._advance(dm, f"{self.monitor}={acc:.3f} >= {until} for {self.patience} check(s)")
                return
        if not self.raise_difficulty:
            return
        if self.per_task:
            for task in dm.active_tasks:
                value = values.get(self._task_key(task))
                streak = self.task_streaks.get(task, 0) + 1 if value is not None and value >= self.threshold else 0
                self.task_streaks[task] = streak
                if streak >= self.patience:
                    self.task_streaks[task] = 0
                    if dm.level_up(task):
                        rank_zero_info(f"DifficultyCurriculum: {task} accuracy {value:.3f} >= {self.threshold}; level -> {dm.level_of(task)}")
        else:
            self.streak = self.streak + 1 if acc is not None and acc >= self.threshold else 0
            if self.streak >= self.patience:
                self.streak = 0
                if dm.level_up():
                    rank_zero_info(
                        f"DifficultyCurriculum: {self.monitor}={acc:.3f} >= {self.threshold} for {self.patience} check(s); "
                        f"mean level -> {dm.mean_level():.2f} (0 easy, 1 medium, 2 hard)"
                    )

    def _advance(self, dm: Any, reason: str) -> None:
        if dm.advance_stage():
            rank_zero_info(f"DifficultyCurriculum: {reason}; stage -> {dm.current_stage} ({dm.stage.name}: {', '.join(dm.active_tasks)})")
        self.batches_in_stage = self.stage_streak = self.streak = 0
        self.task_streaks.clear()

    # ---- helpers -----------------------------------------------------------------------
    def _task_key(self, task: str) -> str:
        return self.per_task_key.format(monitor=self.monitor, task=task)

    def _read(self, trainer: Any, dm: Any) -> dict[str, float]:
        keys = [self._task_key(t) for t in dm.active_tasks] if self.per_task else []
        metrics = getattr(trainer, "callback_metrics", {}) or {}
        out = {}
        for key in [self.monitor, *keys]:
            if key in metrics:
                out[key] = float(metrics[key])
            elif key == self.monitor and key not in self._warned_missing and (not self.per_task or dm.stage.until_accuracy is not None):
                self._warned_missing.add(key)
                rank_zero_warn(f"DifficultyCurriculum: metric {key!r} is not logged (yet); log it or set monitor= to a logged key")
        return out

    @staticmethod
    def _broadcast(trainer: Any, values: dict[str, float]) -> dict[str, float]:
        strategy = getattr(trainer, "strategy", None)
        return strategy.broadcast(values, src=0) if strategy is not None else values

    @staticmethod
    def _log(pl_module: Any, dm: Any) -> None:
        pl_module.log("curriculum/level", float(dm.mean_level()), on_step=True, on_epoch=False)
        pl_module.log("curriculum/stage", float(dm.current_stage), on_step=True, on_epoch=False)

    @staticmethod
    def _datamodule(trainer: Any) -> Any:
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not all(hasattr(dm, m) for m in CURRICULUM_METHODS):
            raise ValueError(
                "DifficultyCurriculum needs a DataModule with a curriculum (level_up, advance_stage, ...), "
                f"e.g. datamodules.enigmata.datamodule.EnigmataDataModule; got {type(dm).__name__}"
            )
        return dm

    # ---- checkpointing -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "streak": self.streak,
            "task_streaks": dict(self.task_streaks),
            "stage_streak": self.stage_streak,
            "batches_in_stage": self.batches_in_stage,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.streak = int(state_dict.get("streak", 0))
        self.task_streaks = dict(state_dict.get("task_streaks", {}))
        self.stage_streak = int(state_dict.get("stage_streak", 0))
        self.batches_in_stage = int(state_dict.get("batches_in_stage", 0))
