"""MixtureDataModule: several Problem DataModules (Enigmata, reasoning-gym, math, ...) as one.

Train item ``i`` is a pure function of ``(seed, i)`` and the sources' own streams: a
``random.Random`` seeded by ``(seed, i)`` picks a source by weight and an index into that
source's train dataset, so every source keeps its own generation, split and curriculum. The eval
set is the sources' eval sets one after the other (each source already keeps its eval disjoint
from its train items), and the grouped metrics are the union of theirs.

Curriculum: the mixture forwards ``callbacks.DifficultyCurriculum``'s calls to the sources that
have one (``level_up`` of a task goes to the source that owns it). Task group names must be
unique across sources for that (per-task levels, per-task metrics); give one source a name prefix
(``ReasoningGymDataModule(name_prefix="rg/")``) when names meet. Multi-stage sources are not
mixed: stages are a schedule over one source's tasks.
"""

from __future__ import annotations

import bisect
import random
from typing import Any

from torch.utils.data import Dataset

from datamodules.base import ProblemDataModule, ProblemDataset
from datamodules.enigmata.datamodule import Mix, Stage

#: The interface a source needs for the mixture to forward a curriculum to it.
CURRICULUM_METHODS = ("level_up", "level_of", "active_tasks", "mean_level", "state_dict", "load_state_dict")


def _has_curriculum(source: Any) -> bool:
    return all(hasattr(source, m) for m in CURRICULUM_METHODS)


class MixtureStream:
    """``i -> problem``: a weighted source, then a uniform index into its train dataset."""

    def __init__(self, seed: int, cumulative: list[float], datasets: list[Dataset]) -> None:
        self.seed, self.cumulative, self.datasets = seed, cumulative, datasets

    def __call__(self, index: int) -> Any:
        rng = random.Random(f"mixture-train/{self.seed}/{index}")
        source = min(bisect.bisect_right(self.cumulative, rng.random()), len(self.datasets) - 1)
        dataset = self.datasets[source]
        return dataset[rng.randrange(len(dataset))]


class MixtureDataModule(ProblemDataModule):
    """Train on a weighted mix of DataModules, validate on all their eval sets.

    Args:
        sources: the DataModules to mix (each with ``train_dataset()``; their own ``batch_size``
            is not used).
        weights: sampling weight per source, in order (None: equal); need not sum to 1.
        train_size: train items per epoch.
        seed: the mixture's seed (which source and which of its items train item ``i`` is).
        batch_size / val_batch_size / num_workers: as in :class:`ProblemDataModule`.
    """

    def __init__(
        self,
        sources: list[ProblemDataModule],
        weights: list[float] | None = None,
        train_size: int = 10_000,
        seed: int = 0,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers)
        if not sources:
            raise ValueError("data.sources: give at least one DataModule to mix")
        for i, source in enumerate(sources):
            if not hasattr(source, "train_dataset"):
                raise ValueError(f"data.sources[{i}]: {type(source).__name__} has no train_dataset(); mix ProblemDataModules")
            if getattr(source, "num_stages", 1) > 1:
                raise ValueError(f"data.sources[{i}]: a multi-stage source cannot be mixed; give it one task mix "
                                 "(weights) or train it on its own")
        weights = [1.0] * len(sources) if weights is None else list(weights)
        if len(weights) != len(sources):
            raise ValueError(f"data.weights: {len(weights)} weights for {len(sources)} sources; give one per source")
        if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"data.weights must be numbers >= 0 with a positive sum, got {weights}")
        if train_size < 1:
            raise ValueError(f"data.train_size must be >= 1, got {train_size}")
        self.sources, self.train_size, self.seed = list(sources), int(train_size), int(seed)
        total, acc = float(sum(weights)), []
        for w in weights:
            acc.append((acc[-1] if acc else 0.0) + w / total)
        self.cumulative = acc
        self._owner: dict[str, Any] = {}
        for i, source in enumerate(self.curriculum_sources):
            for task in source.active_tasks:
                if task in self._owner:
                    raise ValueError(f"data.sources: task {task!r} is in two sources ({type(self._owner[task]).__name__} and "
                                     f"{type(source).__name__}); set a name_prefix on one (e.g. ReasoningGymDataModule name_prefix: rg/)")
                self._owner[task] = source
        self._train: ProblemDataset | None = None

    @property
    def curriculum_sources(self) -> list[Any]:
        return [s for s in self.sources if _has_curriculum(s)]

    # ---- curriculum (forwarded) --------------------------------------------------------------
    current_stage = 0
    num_stages = 1

    @property
    def stage(self) -> Stage:
        return Stage("mixture", Mix.from_weights({t: 1.0 for t in self.active_tasks} or {"-": 1.0}))

    def advance_stage(self) -> bool:
        return False

    @property
    def active_tasks(self) -> list[str]:
        return [t for s in self.curriculum_sources for t in s.active_tasks]

    def _source_of(self, task: str) -> Any:
        if task not in self._owner:
            raise ValueError(f"{task!r} is not a task of any mixed source; tasks: {', '.join(self._owner)}")
        return self._owner[task]

    def level_of(self, task: str) -> Any:
        return self._source_of(task).level_of(task)

    def level_up(self, task: str | None = None) -> bool:
        if task is not None:
            return bool(self._source_of(task).level_up(task))
        return any([bool(s.level_up()) for s in self.curriculum_sources])  # a list: every source moves

    def mean_level(self, tasks: list[str] | None = None) -> float:
        """The sources' mean levels, weighted by their number of tasks (each source's own scale)."""
        parts = []
        for s in self.curriculum_sources:
            mine = s.active_tasks if tasks is None else [t for t in tasks if self._owner.get(t) is s]
            if mine:
                parts.append((s.mean_level(mine), len(mine)))
        n = sum(k for _, k in parts)
        return sum(v * k for v, k in parts) / n if n else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"sources": [s.state_dict() if _has_curriculum(s) else {} for s in self.sources]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("sources") or []
        if len(states) != len(self.sources):
            raise ValueError(f"checkpoint mixes {len(states)} sources, this config {len(self.sources)}")
        for source, state in zip(self.sources, states):
            if state and _has_curriculum(source):
                source.load_state_dict(state)

    # ---- datasets ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        for source in self.sources:
            source.setup(stage)

    def train_dataset(self) -> ProblemDataset:
        if self._train is None:
            datasets = [s.train_dataset() for s in self.sources]
            self._train = ProblemDataset(MixtureStream(self.seed, self.cumulative, datasets), self.train_size, cache=False)
        return self._train

    def val_dataset(self) -> ProblemDataset | None:
        items = []
        for source in self.sources:
            ds = source.val_dataset()
            if ds is not None:
                items += [ds[i] for i in range(len(ds))]
        return ProblemDataset.from_items(items) if items else None

    def metric_groups(self) -> list[str]:
        groups = []
        for source in self.sources:
            if hasattr(source, "metric_groups"):
                groups += source.metric_groups()
        return list(dict.fromkeys(groups))
