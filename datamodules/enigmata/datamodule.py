"""EnigmataDataModule: a seeded, weighted, curriculum-aware stream of Enigmata puzzles.

Train item ``i`` is a pure function of ``(seed, i, stage, difficulty of the drawn task)``: a
``random.Random`` seeded from ``(seed, stage, i)`` draws the task (weighted, Mix-Training) and an
instance seed, then ``task.generate(instance_seed, level)`` builds the puzzle. Instance seeds are
non-negative; the eval split (an Enigmata-Eval-like benchmark: ``eval_per_task`` items per task x
difficulty) uses negative seeds, so the two seed spaces are disjoint by construction. Small
instance spaces can still produce the same puzzle from two seeds, so the eval prompts are also
hashed and a train draw whose prompt is in the eval set is deterministically re-drawn.

Curriculum (why no ``reload_dataloaders_every_n_epochs`` is needed): the train dataset reads the
live curriculum state (per-task difficulty level, current stage) each time it builds an item, and
caches items keyed by that state. With ``num_workers=0`` (the default; generation takes a few ms) a
``level_up()`` / ``advance_stage()`` changes the very next batches; with ``num_workers>0`` and
non-persistent workers, each epoch forks workers with a fresh copy of the state, so changes apply
from the next epoch (set ``reload_dataloaders_every_n_epochs=1`` only if you need persistent
workers). The state is saved in checkpoints (``state_dict``), so a resumed run keeps its level.
"""

from __future__ import annotations

import bisect
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from datamodules.base import ProblemDataModule, ProblemDataset, distinct_eval_items, prompt_hash
from datamodules.enigmata import base
from datamodules.enigmata.base import DIFFICULTIES, Puzzle
from lit_reason.tasks.metrics import problem_groups

#: Stage keys a ``stages`` entry may use.
STAGE_KEYS = ("name", "tasks", "categories", "weights", "balance", "difficulty", "steps", "until_accuracy")
#: Re-draws of an instance seed allowed when a train draw collides with the eval set.
MAX_REDRAWS = 64
#: Train items kept in memory (an LRU; eval items are all kept).
TRAIN_CACHE_ITEMS = 16_384


def category_order() -> list[str]:
    """Category names in the canonical order, then any extra ones the registry holds."""
    from datamodules.enigmata import CATEGORY_NAMES  # late import: this module is imported by the package

    present = {t.category for t in base.TASKS.values()}
    return [c for c in CATEGORY_NAMES if c in present] + sorted(present - set(CATEGORY_NAMES))


def tasks_of_category(category: str) -> list[str]:
    return [n for n, t in base.TASKS.items() if t.category == category]


def select_tasks(tasks: list[str] | None, categories: list[str] | None, where: str = "data") -> list[str]:
    """Task names named directly or through their category (registry order); both None = all."""
    if tasks is None and categories is None:
        return list(base.TASKS)
    chosen: set[str] = set()
    for name in tasks or []:
        if name not in base.TASKS:
            raise ValueError(f"{where}.tasks: unknown task {name!r}; valid tasks: {', '.join(base.TASKS)}")
        chosen.add(name)
    for cat in categories or []:
        names = tasks_of_category(cat)
        if not names:
            raise ValueError(f"{where}.categories: unknown category {cat!r}; valid categories: {', '.join(category_order())}")
        chosen.update(names)
    if not chosen:
        raise ValueError(f"{where}: the task selection is empty; name at least one task or category")
    return [n for n in base.TASKS if n in chosen]


def mix_weights(names: list[str], weights: dict[str, float] | None, balance: str = "task", where: str = "data") -> dict[str, float]:
    """Per-task sampling weight: ``base x weights[category] x weights[task]`` (missing = 1).

    ``balance="task"`` gives every task base 1; ``balance="category"`` gives every category total
    base 1, split equally among its selected tasks (so a 10-task category is not 5x as likely as
    a 2-task one). Weights need not sum to 1.
    """
    if balance not in ("task", "category"):
        raise ValueError(f"{where}.balance must be 'task' or 'category', got {balance!r}")
    weights = dict(weights or {})
    cats = {base.TASKS[n].category for n in names}
    for key, value in weights.items():
        if key not in names and key not in cats:
            raise ValueError(f"{where}.weights: {key!r} is not a selected task or category; selected: {', '.join(names)}")
        if not isinstance(value, (int, float)) or value < 0 or value != value:
            raise ValueError(f"{where}.weights[{key!r}] must be a number >= 0, got {value!r}")
    per_cat = {c: sum(base.TASKS[n].category == c for n in names) for c in cats}
    out = {}
    for n in names:
        cat = base.TASKS[n].category
        share = 1.0 if balance == "task" else 1.0 / per_cat[cat]
        out[n] = share * float(weights.get(cat, 1.0)) * float(weights.get(n, 1.0))
    if sum(out.values()) <= 0:
        raise ValueError(f"{where}.weights: every selected task has weight 0; give at least one a positive weight")
    return out


@dataclass(frozen=True)
class Mix:
    """A weighted choice over task names: ``draw(rng)`` consumes exactly one ``rng.random()``."""

    names: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def from_weights(cls, weights: dict[str, float]) -> "Mix":
        names = tuple(n for n, w in weights.items() if w > 0)
        total, acc = 0.0, []
        for n in names:
            total += weights[n]
            acc.append(total)
        return cls(names, tuple(a / total for a in acc))

    def draw(self, rng: random.Random) -> str:
        i = bisect.bisect_right(self.cumulative, rng.random())
        return self.names[min(i, len(self.names) - 1)]


@dataclass
class Stage:
    """One Multi-stage RL phase: a task mix and when it ends (``steps`` batches or accuracy)."""

    name: str
    mix: Mix
    difficulty: dict[str, str] = field(default_factory=dict)
    steps: int | None = None
    until_accuracy: float | None = None


def resolve_levels(difficulty: str | dict[str, str], names: list[str], where: str) -> dict[str, str]:
    """Level per task from a single level or ``{task|category|"default": level}``."""

    def check(level: Any, key: str) -> str:
        if level not in DIFFICULTIES:
            raise ValueError(f"{where}{key}: unknown difficulty {level!r}; choose one of {', '.join(DIFFICULTIES)}")
        return level

    if isinstance(difficulty, str):
        return {n: check(difficulty, "") for n in names}
    if not isinstance(difficulty, dict):
        raise ValueError(f"{where}: difficulty must be a level name or a {{task or category: level}} mapping, got {difficulty!r}")
    default = check(difficulty.get("default", "medium"), "[default]")
    cats = {base.TASKS[n].category for n in names}
    for key in difficulty:
        if key != "default" and key not in names and key not in cats:
            raise ValueError(f"{where}: {key!r} is not a selected task or category (or 'default'); selected: {', '.join(names)}")
    out = {}
    for n in names:
        cat = base.TASKS[n].category
        level = difficulty.get(n, difficulty.get(cat, default))
        out[n] = check(level, f"[{n if n in difficulty else cat}]")
    return out


@dataclass
class CurriculumState:
    """What the train stream depends on besides the seed: per-task level and the stage index."""

    levels: dict[str, str]
    stage: int = 0


class TrainStream:
    """``i -> Puzzle`` for the train split; picklable (DataLoader workers get a copy)."""

    def __init__(self, seed: int, stages: list[Stage], state: CurriculumState, knobs: dict[str, dict],
                 eval_hashes: frozenset[bytes], prompt_style: str = "full") -> None:
        self.seed, self.stages, self.state, self.knobs, self.eval_hashes = seed, stages, state, knobs, eval_hashes
        self.prompt_style = prompt_style
        self._cache: OrderedDict[tuple, Puzzle] = OrderedDict()
        self.redraws = 0  # how many draws were re-drawn for colliding with the eval set

    def __call__(self, index: int) -> Puzzle:
        stage = self.state.stage
        rng = random.Random(f"enigmata-train/{self.seed}/{stage}/{index}")
        task = self.stages[stage].mix.draw(rng)
        level = self.state.levels[task]
        key = (stage, task, level, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        for _ in range(MAX_REDRAWS):
            puzzle = base.TASKS[task].generate(rng.getrandbits(62), level, self.prompt_style, **self.knobs.get(task, {}))
            if prompt_hash(puzzle.prompt) not in self.eval_hashes:
                break
            self.redraws += 1
        else:
            raise RuntimeError(
                f"enigmata: task {task!r} at difficulty {level!r} drew {MAX_REDRAWS} eval-set puzzles in a row "
                "(its instance space is too small); lower data.eval_per_task or leave the task out of training"
            )
        self._cache[key] = puzzle
        if len(self._cache) > TRAIN_CACHE_ITEMS:
            self._cache.popitem(last=False)
        return puzzle


def build_eval_items(names: list[str], difficulties: list[str], per_task: int, knobs: dict[str, dict],
                     prompt_style: str = "full") -> list[Puzzle]:
    """``per_task`` distinct puzzles per task x difficulty from seeds -1, -2, ... (a fixed benchmark:
    it does not depend on the training seed, so runs are comparable); a task x difficulty whose
    space runs out first (twiddle easy has ~16 boards) keeps half, see :func:`distinct_eval_items`."""

    def make(group: tuple[str, str], attempt: int) -> Puzzle:
        name, level = group
        return base.TASKS[name].generate(-1 - attempt, level, prompt_style, **knobs.get(name, {}))

    return distinct_eval_items([(n, level) for n in names for level in difficulties], make, per_task)


class EnigmataDataModule(ProblemDataModule):
    """Enigmata puzzles for RL: Mix-Training (weighted tasks), Multi-stage RL, difficulty curriculum.

    Args:
        tasks: task names to train on (None with ``categories`` None: all registered tasks).
        categories: category names whose tasks are added to ``tasks``.
        weights: task or category name -> sampling weight multiplier (Mix-Training).
        balance: ``"task"`` (every task weight 1 before ``weights``) or ``"category"`` (every
            category total weight 1, shared by its tasks).
        difficulty: one level for all tasks, or ``{task | category | "default": level}``.
        train_size: train items per epoch (generated lazily per index).
        eval_per_task: eval items per task x difficulty (0: no validation set).
        eval_difficulties: levels in the eval set (None: easy, medium, hard).
        seed: the train stream's seed (the eval set is fixed, independent of it).
        stages: Multi-stage RL: a list of ``{tasks, categories, weights, balance, difficulty, name,
            steps | until_accuracy}``; a stage ends after ``steps`` train batches or once the
            curriculum callback sees accuracy >= ``until_accuracy``; the last stage may have
            neither. Advanced by ``callbacks.DifficultyCurriculum``.
        knobs: task name -> knob overrides applied over every preset (e.g. ``{maze: {size: 7}}``).
        prompt_style: ``full`` (the Enigmata prompt) or ``compact`` (task name + bare instance, for
            tiny models; only tasks with a compact form, see ``base.compact_tasks()``).
        batch_size / val_batch_size / num_workers: as in :class:`ProblemDataModule`.
    """

    def __init__(
        self,
        tasks: list[str] | None = None,
        categories: list[str] | None = None,
        weights: dict[str, float] | None = None,
        balance: str = "task",
        difficulty: str | dict[str, str] = "medium",
        train_size: int = 10_000,
        eval_per_task: int = 50,
        eval_difficulties: list[str] | None = None,
        seed: int = 0,
        stages: list[dict] | None = None,
        knobs: dict[str, dict] | None = None,
        prompt_style: str = "full",
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        if not base.TASKS:
            raise ValueError("data: no Enigmata task is registered; import datamodules.enigmata first")
        if train_size < 1:
            raise ValueError(f"data.train_size must be >= 1, got {train_size}")
        if eval_per_task < 0:
            raise ValueError(f"data.eval_per_task must be >= 0, got {eval_per_task}")
        self.train_size, self.eval_per_task, self.seed = int(train_size), int(eval_per_task), int(seed)
        self.eval_difficulties = list(eval_difficulties) if eval_difficulties is not None else list(DIFFICULTIES)
        for level in self.eval_difficulties:
            if level not in DIFFICULTIES:
                raise ValueError(f"data.eval_difficulties: unknown difficulty {level!r}; choose from {', '.join(DIFFICULTIES)}")

        if stages:
            self.stages = [self._parse_stage(i, spec) for i, spec in enumerate(stages)]
            stage_names = {n for s in self.stages for n in s.mix.names}
            top = select_tasks(tasks, categories) if (tasks or categories) else []
            self.universe = [n for n in base.TASKS if n in stage_names or n in top]
        else:
            self.universe = select_tasks(tasks, categories)
            self.stages = [Stage("mix", Mix.from_weights(mix_weights(self.universe, weights, balance)))]
        self.knobs = self._check_knobs(knobs or {})
        self.prompt_style = self._check_prompt_style(prompt_style)
        self.state = CurriculumState(levels=resolve_levels(difficulty, self.universe, "data.difficulty"))
        self.state.levels.update(self.stages[0].difficulty)
        self._eval: list[Puzzle] | None = None
        self._train: TrainStream | None = None

    # ---- configuration -------------------------------------------------------------------
    def _parse_stage(self, index: int, spec: dict) -> Stage:
        where = f"data.stages[{index}]"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a mapping with tasks/categories and steps or until_accuracy, got {spec!r}")
        unknown = set(spec) - set(STAGE_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {', '.join(STAGE_KEYS)}")
        names = select_tasks(spec.get("tasks"), spec.get("categories"), where)
        mix = Mix.from_weights(mix_weights(names, spec.get("weights"), spec.get("balance", "task"), where))
        levels = resolve_levels(spec["difficulty"], names, f"{where}.difficulty") if "difficulty" in spec else {}
        steps, until = spec.get("steps"), spec.get("until_accuracy")
        if steps is not None and until is not None:
            raise ValueError(f"{where}: give either steps or until_accuracy, not both")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"{where}.steps must be an integer >= 1 (train batches), got {steps!r}")
        if until is not None and not (isinstance(until, (int, float)) and 0 <= until <= 1):
            raise ValueError(f"{where}.until_accuracy must be a number in [0, 1], got {until!r}")
        return Stage(str(spec.get("name", f"stage{index}")), mix, levels, steps, None if until is None else float(until))

    def _check_prompt_style(self, style: str) -> str:
        if style not in base.PROMPT_STYLES:
            raise ValueError(f"data.prompt_style: unknown style {style!r}; choose one of {', '.join(base.PROMPT_STYLES)}")
        lacking = [n for n in self.universe if not base.TASKS[n].has_compact_prompt]
        if style == "compact" and lacking:
            raise ValueError(f"data.prompt_style compact: task(s) {', '.join(lacking)} have no compact prompt; "
                             f"use prompt_style full or train on tasks with one ({', '.join(base.compact_tasks())})")
        return style

    def _check_knobs(self, knobs: dict[str, dict]) -> dict[str, dict]:
        for name, overrides in knobs.items():
            if name not in self.universe:
                raise ValueError(f"data.knobs: {name!r} is not a selected task; selected: {', '.join(self.universe)}")
            if not isinstance(overrides, dict):
                raise ValueError(f"data.knobs[{name!r}] must be a mapping knob -> value, got {overrides!r}")
            for level in DIFFICULTIES:
                base.TASKS[name].knobs(level, **overrides)  # raises one clear line on an unknown knob
        return {k: dict(v) for k, v in knobs.items()}

    # ---- curriculum ------------------------------------------------------------------------
    @property
    def current_stage(self) -> int:
        return self.state.stage

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def stage(self) -> Stage:
        return self.stages[self.state.stage]

    @property
    def active_tasks(self) -> list[str]:
        """The tasks the current stage trains on."""
        return list(self.stage.mix.names)

    def level_of(self, task: str) -> str:
        """The current difficulty level of ``task``."""
        return self.state.levels[task]

    def set_difficulty(self, task: str | None, level: str) -> None:
        """Set ``level`` for one task, every task of a category, or (None) every task."""
        if level not in DIFFICULTIES:
            raise ValueError(f"set_difficulty: unknown difficulty {level!r}; choose one of {', '.join(DIFFICULTIES)}")
        if task is None:
            names = self.universe
        elif task in self.state.levels:
            names = [task]
        else:
            names = [n for n in self.universe if base.TASKS[n].category == task]
            if not names:
                raise ValueError(f"set_difficulty: {task!r} is not a selected task or category")
        for n in names:
            self.state.levels[n] = level

    def level_up(self, task: str | None = None) -> bool:
        """Move ``task`` (None: every active task) one level up (easy -> medium -> hard).
        Returns whether any level changed."""
        names = self.active_tasks if task is None else [task]
        changed = False
        for n in names:
            i = DIFFICULTIES.index(self.state.levels[n])
            if i + 1 < len(DIFFICULTIES):
                self.state.levels[n] = DIFFICULTIES[i + 1]
                changed = True
        return changed

    def advance_stage(self) -> bool:
        """Go to the next stage (applying its ``difficulty``); False when already at the last."""
        if self.state.stage + 1 >= len(self.stages):
            return False
        self.state.stage += 1
        self.state.levels.update(self.stage.difficulty)
        return True

    def mean_level(self, tasks: list[str] | None = None) -> float:
        """Mean level index (easy 0, medium 1, hard 2) over ``tasks`` (default: active tasks)."""
        names = self.active_tasks if tasks is None else tasks
        return sum(DIFFICULTIES.index(self.state.levels[n]) for n in names) / max(len(names), 1)

    def state_dict(self) -> dict[str, Any]:
        return {"levels": dict(self.state.levels), "stage": self.state.stage}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        stage = int(state_dict.get("stage", 0))
        if not 0 <= stage < len(self.stages):
            raise ValueError(f"checkpoint curriculum stage {stage} does not exist in this config ({len(self.stages)} stages)")
        levels = state_dict.get("levels", {})
        self.state.stage = stage
        for n, level in levels.items():
            if n in self.state.levels and level in DIFFICULTIES:
                self.state.levels[n] = level

    # ---- datasets ------------------------------------------------------------------------
    def eval_items(self) -> list[Puzzle]:
        if self._eval is None:
            self._eval = build_eval_items(self.universe, self.eval_difficulties, self.eval_per_task, self.knobs, self.prompt_style)
        return self._eval

    def train_stream(self) -> TrainStream:
        if self._train is None:
            hashes = frozenset(prompt_hash(p.prompt) for p in self.eval_items())
            self._train = TrainStream(self.seed, self.stages, self.state, self.knobs, hashes, self.prompt_style)
        return self._train

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        if len(self.stages) > 1 and trainer is not None and stage in (None, "fit"):
            if not any(hasattr(cb, "curriculum_driver") for cb in trainer.callbacks):
                rank_zero_warn("data.stages: stages advance only with callbacks.DifficultyCurriculum in the trainer callbacks")

    def train_dataset(self) -> ProblemDataset:
        return ProblemDataset(self.train_stream(), self.train_size, cache=False)  # TrainStream caches per state

    def val_dataset(self) -> ProblemDataset | None:
        items = self.eval_items()
        return ProblemDataset.from_items(items) if items else None

    def metric_groups(self) -> list[str]:
        """Every group name :func:`lit_reason.tasks.metrics.problem_groups` yields for this module's
        items: the eval items' groups plus task / category / difficulty groups of the train tasks."""
        groups = [f"task/{n}" for n in self.universe]
        groups += [f"category/{c}" for c in category_order() if any(base.TASKS[n].category == c for n in self.universe)]
        groups += [f"difficulty/{d}" for d in DIFFICULTIES]
        for item in self.eval_items():
            groups.extend(problem_groups(item.metadata))
        return list(dict.fromkeys(groups))
