"""ReasoningGymDataModule: reasoning-gym's seeded generators as a weighted, curriculum-aware stream.

Item ``idx`` of a reasoning-gym dataset is a pure function of ``(config, idx)`` (the dataset seed
is fixed, see ``tasks.BASE_SEED``), so the split is a split of the index space: the eval set takes
indices ``0, 1, 2, ...`` of every task x level (a fixed benchmark, whatever the training seed), and
train item ``i`` draws its task (weighted) and an index ``>= EVAL_INDEX_SPAN`` from a
``random.Random`` seeded by ``(seed, i)``. Small instance spaces can still repeat an eval item from
another index, so a train draw whose prompt is in the eval set is re-drawn, as in
``EnigmataDataModule``.

Curriculum: reasoning-gym curricula map a level (0 = easiest) to config values. ``difficulty``
sets a task's starting level (None: the config as given, no curriculum);
``callbacks.DifficultyCurriculum`` raises levels through the same interface as Enigmata's
(``level_up``, ``level_of``, ``active_tasks``, ...), and the train stream reads the live level.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from datamodules.base import ProblemDataModule, ProblemDataset, distinct_eval_items, prompt_hash
from datamodules.enigmata.datamodule import Mix, Stage
from datamodules.reasoning_gym import tasks as rg_tasks
from datamodules.reasoning_gym.problem import ReasoningGymProblem
from lit_reason.tasks.metrics import problem_groups

#: Eval items use indices below this, train items indices from here to ``tasks.INDEX_LIMIT``
#: (item keys never meet).
EVAL_INDEX_SPAN = 2**20
#: Re-draws allowed when a train draw collides with the eval set or its generator fails.
MAX_REDRAWS = 64
#: Train items kept in memory (an LRU).
TRAIN_CACHE_ITEMS = 16_384


class ProblemFactory:
    """``(task, level, index) -> ReasoningGymProblem``, one dataset object per (task, level)."""

    def __init__(self, categories: dict[str, str], configs: dict[str, dict], range_mode: str, prefix: str,
                 timeout: float) -> None:
        self.configs, self.range_mode, self.prefix, self.timeout = configs, range_mode, prefix, timeout
        self._datasets: dict[tuple[str, int | None], tuple[Any, Any]] = {}
        self._categories = dict(categories)

    def dataset(self, task: str, level: int | None) -> tuple[Any, Any]:
        key = (task, level)
        if key not in self._datasets:
            config = rg_tasks.build_config(task, self.configs.get(task, {}), level, self.range_mode)
            self._datasets[key] = (rg_tasks.build_dataset(task, config), config)
        return self._datasets[key]

    def make(self, task: str, level: int | None, index: int) -> ReasoningGymProblem:
        dataset, config = self.dataset(task, level)
        entry = dataset[index]
        metadata = {"task": self.prefix + task, "category": self.prefix + self._categories[task], "index": index,
                    "source": "reasoning_gym"}
        if level is not None:
            metadata["level"] = level
        return ReasoningGymProblem.from_entry(task, entry, config, metadata, self.timeout)


class TrainStream:
    """``i -> ReasoningGymProblem`` for the train split (reads the live curriculum levels)."""

    def __init__(self, seed: int, mix: Mix, levels: dict[str, int | None], factory: ProblemFactory,
                 eval_hashes: frozenset[bytes]) -> None:
        self.seed, self.mix, self.levels, self.factory, self.eval_hashes = seed, mix, levels, factory, eval_hashes
        self._cache: OrderedDict = OrderedDict()
        self.redraws = 0

    def __call__(self, index: int) -> ReasoningGymProblem:
        rng = random.Random(f"reasoning-gym-train/{self.seed}/{index}")
        task = self.mix.draw(rng)
        level = self.levels[task]
        key = (task, level, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        error = None
        for _ in range(MAX_REDRAWS):
            item_index = rng.randrange(EVAL_INDEX_SPAN, rg_tasks.INDEX_LIMIT)
            try:
                problem = self.factory.make(task, level, item_index)
            except Exception as err:  # noqa: BLE001 - a generator that fails on one index: draw another
                error = err
                self.redraws += 1
                continue
            if prompt_hash(problem.prompt) not in self.eval_hashes:
                break
            self.redraws += 1
        else:
            why = f"its generator failed ({type(error).__name__}: {error})" if error else "its instance space is too small"
            raise RuntimeError(f"reasoning-gym: task {task!r} at level {level} gave no new train item in {MAX_REDRAWS} draws; "
                               f"{why}; lower data.eval_per_task or leave the task out")
        self._cache[key] = problem
        if len(self._cache) > TRAIN_CACHE_ITEMS:
            self._cache.popitem(last=False)
        return problem


class ReasoningGymDataModule(ProblemDataModule):
    """reasoning-gym tasks for RL: named tasks with their configs, a weighted mix, curricula.

    Args:
        tasks: reasoning-gym task names (e.g. ``[basic_arithmetic, maze]``).
        categories: reasoning-gym categories whose tasks are added (``arithmetic``, ``games``, ...).
        weights: task or category name -> sampling weight (missing = 1; need not sum to 1).
        config: task name -> config fields for ``reasoning_gym.create_dataset`` (e.g.
            ``{basic_arithmetic: {min_terms: 2, max_terms: 3}}``); ``seed`` and ``size`` are set here.
        difficulty: curriculum level (0 = easiest) for every task with a curriculum, or
            ``{task | "default": level | null}``; None: no curriculum, the config as given.
        range_mode: how reasoning-gym's curriculum turns a level into a min/max range:
            ``inclusive`` (levels 0..L), ``upper_bound`` (level L only) or ``last_k``.
        train_size: train items per epoch (generated lazily per index).
        eval_per_task: eval items per task x level (0: no validation set).
        eval_levels: curriculum levels in the eval set (None: each task's starting level).
        seed: the train stream's seed (the eval set does not depend on it).
        name_prefix: prefix of the task / category group names (e.g. ``rg/`` beside Enigmata,
            whose maze, sudoku, kakurasu and countdown share reasoning-gym's names).
        score_timeout: seconds one completion may take to score (then it scores 0).
        batch_size / val_batch_size / num_workers: as in :class:`ProblemDataModule`.
    """

    def __init__(
        self,
        tasks: list[str] | None = None,
        categories: list[str] | None = None,
        weights: dict[str, float] | None = None,
        config: dict[str, dict] | None = None,
        difficulty: int | dict[str, int | None] | None = None,
        range_mode: str = "inclusive",
        train_size: int = 10_000,
        eval_per_task: int = 50,
        eval_levels: list[int] | None = None,
        seed: int = 0,
        name_prefix: str = "",
        score_timeout: float = 2.0,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        rg_tasks.require_reasoning_gym()
        if train_size < 1:
            raise ValueError(f"data.train_size must be >= 1, got {train_size}")
        if not 0 <= eval_per_task <= EVAL_INDEX_SPAN // 8:
            raise ValueError(f"data.eval_per_task must be in [0, {EVAL_INDEX_SPAN // 8}], got {eval_per_task}")
        if range_mode not in rg_tasks.RANGE_MODES:
            raise ValueError(f"data.range_mode: unknown mode {range_mode!r}; choose one of {', '.join(rg_tasks.RANGE_MODES)}")
        if not (isinstance(score_timeout, (int, float)) and score_timeout > 0):
            raise ValueError(f"data.score_timeout must be a number of seconds > 0, got {score_timeout!r}")
        self.train_size, self.eval_per_task, self.seed, self.prefix = int(train_size), int(eval_per_task), int(seed), name_prefix
        self.names = self._select(tasks, categories)
        varying = sorted(set(self.names) & rg_tasks.NOT_REPRODUCIBLE)
        if varying:
            rank_zero_warn(f"reasoning-gym task(s) {', '.join(varying)} generate different items in different processes "
                           "(set iteration order); fix PYTHONHASHSEED for a reproducible eval set")
        self.categories = {n: rg_tasks.category_of(n) for n in self.names}
        self.mix = Mix.from_weights(self._weights(weights or {}))
        self.levels = self._levels(difficulty)
        configs = {}
        for name, overrides in (config or {}).items():
            if name not in self.names:
                raise ValueError(f"data.config: {name!r} is not a selected task; selected: {', '.join(self.names)}")
            configs[name] = rg_tasks.check_config(name, overrides, self.levels[name], f"data.config[{name!r}]")
        self.factory = ProblemFactory(self.categories, configs, range_mode, name_prefix, float(score_timeout))
        self.eval_levels = self._eval_levels(eval_levels)
        for name in self.names:  # build every config now: a bad value fails before training
            for level in {self.levels[name], *self.eval_levels[name]}:
                self.factory.dataset(name, level)
        self._eval: list[ReasoningGymProblem] | None = None
        self._train: TrainStream | None = None

    # ---- configuration -------------------------------------------------------------------
    @staticmethod
    def _select(tasks: list[str] | None, categories: list[str] | None) -> list[str]:
        chosen = [rg_tasks.check_task(n) for n in tasks or []]
        known = {rg_tasks.category_of(n) for n in rg_tasks.supported_tasks()}
        for cat in categories or []:
            if cat not in known:
                raise ValueError(f"data.categories: unknown reasoning-gym category {cat!r}; valid: {', '.join(sorted(known))}")
            chosen += [n for n in rg_tasks.supported_tasks() if rg_tasks.category_of(n) == cat]
        if not chosen:
            raise ValueError("data: name at least one reasoning-gym task (data.tasks) or category (data.categories)")
        return list(dict.fromkeys(chosen))

    def _weights(self, weights: dict[str, float]) -> dict[str, float]:
        cats = set(self.categories.values())
        for key, value in weights.items():
            if key not in self.names and key not in cats:
                raise ValueError(f"data.weights: {key!r} is not a selected task or category; selected: {', '.join(self.names)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"data.weights[{key!r}] must be a number >= 0, got {value!r}")
        out = {n: float(weights.get(self.categories[n], 1.0)) * float(weights.get(n, 1.0)) for n in self.names}
        if sum(out.values()) <= 0:
            raise ValueError("data.weights: every selected task has weight 0; give at least one a positive weight")
        return out

    def _check_level(self, name: str, level: Any, where: str) -> int | None:
        if level is None:
            return None
        if isinstance(level, bool) or not isinstance(level, int) or level < 0:
            raise ValueError(f"{where}: a curriculum level is an integer >= 0 (0 = easiest) or null, got {level!r}")
        top = rg_tasks.max_level(name)
        return None if top is None else min(level, top)  # no curriculum: the config as given

    def _levels(self, difficulty: int | dict | None) -> dict[str, int | None]:
        if difficulty is None or isinstance(difficulty, int):
            return {n: self._check_level(n, difficulty, "data.difficulty") for n in self.names}
        if not isinstance(difficulty, dict):
            raise ValueError(f"data.difficulty must be a level, null or a {{task | default: level}} mapping, got {difficulty!r}")
        for key in difficulty:
            if key != "default" and key not in self.names:
                raise ValueError(f"data.difficulty: {key!r} is not a selected task (or 'default'); selected: {', '.join(self.names)}")
        default = difficulty.get("default")
        return {n: self._check_level(n, difficulty.get(n, default), f"data.difficulty[{n!r}]") for n in self.names}

    def _eval_levels(self, eval_levels: list[int] | None) -> dict[str, list[int | None]]:
        if eval_levels is None:
            return {n: [self.levels[n]] for n in self.names}
        out = {}
        for n in self.names:
            levels = [self._check_level(n, lv, "data.eval_levels") for lv in eval_levels]
            out[n] = list(dict.fromkeys(levels)) or [self.levels[n]]
        return out

    # ---- curriculum (the interface of callbacks.DifficultyCurriculum) -------------------------
    def _bare(self, task: str) -> str:
        name = task[len(self.prefix):] if self.prefix and task.startswith(self.prefix) else task
        if name not in self.levels:
            raise ValueError(f"{task!r} is not a selected reasoning-gym task; selected: {', '.join(self.names)}")
        return name

    @property
    def stage(self) -> Stage:
        return Stage("mix", self.mix)

    current_stage = 0
    num_stages = 1

    def advance_stage(self) -> bool:
        return False

    @property
    def active_tasks(self) -> list[str]:
        """Task group names (with ``name_prefix``), as the grouped metrics name them."""
        return [self.prefix + n for n in self.mix.names]

    def level_of(self, task: str) -> int | None:
        return self.levels[self._bare(task)]

    def set_difficulty(self, task: str | None, level: int | None) -> None:
        for n in self.names if task is None else [self._bare(task)]:
            self.levels[n] = self._check_level(n, level, "set_difficulty")

    def level_up(self, task: str | None = None) -> bool:
        """Raise ``task`` (None: every task) one curriculum level; tasks without a curriculum or
        without a level (``difficulty: null``) stay. Returns whether any level changed."""
        changed = False
        for n in self.mix.names if task is None else [self._bare(task)]:
            level, top = self.levels[n], rg_tasks.max_level(n)
            if level is not None and top is not None and level < top:
                self.levels[n] = level + 1
                changed = True
        return changed

    def mean_level(self, tasks: list[str] | None = None) -> float:
        names = self.mix.names if tasks is None else [self._bare(t) for t in tasks]
        levels = [self.levels[n] for n in names if self.levels[n] is not None]
        return sum(levels) / len(levels) if levels else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"levels": dict(self.levels)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for n, level in (state_dict.get("levels") or {}).items():
            if n in self.levels:
                self.levels[n] = self._check_level(n, level, "checkpoint curriculum level")

    # ---- datasets ------------------------------------------------------------------------
    def eval_items(self) -> list[ReasoningGymProblem]:
        """``eval_per_task`` distinct items per task x eval level from indices 0, 1, ...; a
        task whose space runs out first keeps half of them (see :func:`distinct_eval_items`)."""
        if self._eval is None:
            groups = [(name, level) for name in self.names for level in self.eval_levels[name]]
            self._eval = distinct_eval_items(groups, self._eval_item, self.eval_per_task)
        return self._eval

    def _eval_item(self, group: tuple[str, int | None], index: int) -> ReasoningGymProblem | None:
        try:
            return self.factory.make(*group, index)
        except Exception:  # noqa: BLE001 - skip an index its generator fails on
            return None

    def train_stream(self) -> TrainStream:
        if self._train is None:
            hashes = frozenset(prompt_hash(p.prompt) for p in self.eval_items())
            self._train = TrainStream(self.seed, self.mix, self.levels, self.factory, hashes)
        return self._train

    def train_dataset(self) -> ProblemDataset:
        return ProblemDataset(self.train_stream(), self.train_size, cache=False)  # the stream caches per level

    def val_dataset(self) -> ProblemDataset | None:
        items = self.eval_items()
        return ProblemDataset.from_items(items) if items else None

    def metric_groups(self) -> list[str]:
        """Group names of :func:`lit_reason.tasks.metrics.problem_groups` for this module's items."""
        groups = [f"task/{self.prefix}{n}" for n in self.names]
        groups += [f"category/{self.prefix}{c}" for c in dict.fromkeys(self.categories.values())]
        top = max((rg_tasks.max_level(n) or 0 for n in self.names), default=0)
        groups += [f"level/{i}" for i in range(top + 1)]
        for item in self.eval_items():
            groups += problem_groups(item.metadata)
        return list(dict.fromkeys(groups))
