"""Resolving reasoning-gym task names, configs and curriculum levels into dataset objects.

A reasoning-gym dataset is a seeded generator: item ``idx`` of a dataset with seed ``s`` is built
from ``Random(s + idx)`` (every registered task does this), so one dataset object per
(task, config, level) with a fixed seed serves every item by index. The DataModule owns ``seed``
and ``size`` (they define which items exist and the train / eval split), so a user's config may
not set them.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

#: The dataset seed of every object built here: items differ by index, never by seed, so the
#: train / eval split is a split of the index space (see ``datamodule.EVAL_INDEX_SPAN``).
BASE_SEED = 0
#: Item indices are below this: some tasks seed numpy with ``seed + idx``, which must fit 32 bits.
INDEX_LIMIT = 2**32 - 1
#: The virtual size given to reasoning-gym (items are generated per index, nothing is stored).
VIRTUAL_SIZE = INDEX_LIMIT
#: Config fields the DataModule sets itself.
MANAGED_FIELDS = ("seed", "size")
#: Range modes of reasoning-gym's curriculum context (how a level becomes a min/max range).
RANGE_MODES = ("inclusive", "upper_bound", "last_k")
#: Registered tasks this DataModule cannot serve, and why (one line each).
UNSUPPORTED = {
    "composite": "it is itself a weighted mix; list its tasks in data.tasks with data.weights instead",
    "acre": "it precomputes a fixed list of `size` items instead of generating item i on demand",
    "list_functions": "it precomputes a fixed list of `size` items instead of generating item i on demand",
    "gsm_symbolic": "it precomputes a list of `size` generator choices instead of choosing per item",
    "word_ladder": "its config caps size at 20 000 items, too few for a disjoint train / eval split by index",
}
#: Tasks whose item i differs between Python processes (they iterate a set or dict of strings,
#: whose order depends on PYTHONHASHSEED): measured for reasoning-gym 0.1.25 by generating items
#: 0, 1 and 2**31 under PYTHONHASHSEED=1 and =2. Training works; the eval set is not reproducible
#: across runs unless PYTHONHASHSEED is fixed.
NOT_REPRODUCIBLE = frozenset({"isomorphic_strings", "knight_swap", "polynomial_multiplication", "ransom_note"})



INSTALL_HINT = "reasoning-gym is not installed; install it with: pip install 'lit-reason[reasoning-gym]' (or pip install reasoning-gym)"


def require_reasoning_gym():
    """The ``reasoning_gym`` package, or one line saying how to install it."""
    try:
        import reasoning_gym
    except ImportError as err:
        raise ValueError(INSTALL_HINT) from err
    return reasoning_gym


def registry() -> dict[str, tuple[type, type]]:
    """reasoning-gym's task name -> (dataset class, config dataclass)."""
    require_reasoning_gym()
    from reasoning_gym.factory import DATASETS

    return DATASETS


def supported_tasks() -> list[str]:
    return sorted(n for n in registry() if n not in UNSUPPORTED)


def check_task(name: Any, where: str = "data.tasks") -> str:
    """``name`` if it is a task this DataModule can serve, else one line naming close matches."""
    if not isinstance(name, str) or name not in registry():
        close = difflib.get_close_matches(str(name), supported_tasks(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"{where}: unknown reasoning-gym task {name!r}; {hint}list them with "
                         "python -c \"import reasoning_gym; print(sorted(reasoning_gym.factory.DATASETS))\"")
    if name in UNSUPPORTED:
        raise ValueError(f"{where}: reasoning-gym task {name!r} is not supported: {UNSUPPORTED[name]}")
    return name


def category_of(name: str) -> str:
    """reasoning-gym's own category: the sub-package of the task (arithmetic, games, graphs, ...)."""
    parts = registry()[name][0].__module__.split(".")
    return parts[1] if len(parts) >= 3 else "other"


def config_fields(name: str) -> list[str]:
    """The config fields a user may set for ``name``."""
    return [f.name for f in dataclasses.fields(registry()[name][1]) if f.name not in MANAGED_FIELDS]


def has_curriculum(name: str) -> bool:
    from reasoning_gym.factory import CURRICULA

    return name in CURRICULA


def curriculum_fields(name: str) -> list[str]:
    """Config fields the task's curriculum sets from its level (empty without a curriculum)."""
    if not has_curriculum(name):
        return []
    from reasoning_gym.coaching.attributes import RangeAttributeDefinition
    from reasoning_gym.factory import create_curriculum

    out = []
    for attr in create_curriculum(name).attributes.values():
        out += [attr.lower_field_name, attr.upper_field_name] if isinstance(attr, RangeAttributeDefinition) else [attr.field_name]
    return out


def max_level(name: str) -> int | None:
    """Highest curriculum level of ``name`` (0 = easiest), or None when it has no curriculum."""
    if not has_curriculum(name):
        return None
    from reasoning_gym.factory import create_curriculum

    attrs = create_curriculum(name).attributes.values()
    return max((len(a.levels) - 1 for a in attrs), default=0)


def check_config(name: str, overrides: Any, level: int | None, where: str) -> dict[str, Any]:
    """Validate a user's config for ``name`` (one line on an unknown / managed / curriculum field)."""
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ValueError(f"{where} must be a mapping field -> value, got {overrides!r}")
    managed = sorted(set(overrides) & set(MANAGED_FIELDS))
    if managed:
        raise ValueError(f"{where}: {', '.join(managed)} is set by the DataModule (use data.seed / data.train_size / "
                         "data.eval_per_task); remove it from the task config")
    unknown = sorted(set(overrides) - set(config_fields(name)))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} for reasoning-gym task {name!r}; "
                         f"valid fields: {', '.join(config_fields(name))}")
    if level is not None:
        driven = sorted(set(overrides) & set(curriculum_fields(name)))
        if driven:
            raise ValueError(f"{where}: {', '.join(driven)} is set by the curriculum level (data.difficulty); "
                             f"drop it, or set data.difficulty for {name!r} to null to use the config as given")
    return dict(overrides)


def build_config(name: str, overrides: dict[str, Any], level: int | None, range_mode: str = "inclusive"):
    """The config dataclass of ``name``: its defaults, then ``overrides``, then (with a ``level``)
    the curriculum's values at that level. Invalid values end in one line."""
    _, config_cls = registry()[name]
    base = {**overrides, "seed": BASE_SEED, "size": VIRTUAL_SIZE}
    try:
        if level is None:
            config = config_cls(**base)
        else:
            from reasoning_gym.coaching.base_curriculum import DefaultCurriculumContext, RangeAttributeMode
            from reasoning_gym.factory import create_curriculum

            curriculum = create_curriculum(name)
            curriculum.set_global_level(level)
            config = curriculum.generate_configuration(base, DefaultCurriculumContext(mode=RangeAttributeMode(range_mode)))
        if hasattr(config, "validate"):
            config.validate()
    except (AssertionError, TypeError, ValueError, KeyError) as err:
        at = "" if level is None else f" at curriculum level {level}"
        raise ValueError(f"data.config[{name!r}]{at}: reasoning-gym rejected the config: {err or type(err).__name__}") from err
    return config


def build_dataset(name: str, config):
    """The reasoning-gym dataset object for a built config."""
    return registry()[name][0](config=config)

