"""YAML option groups (``model.lora``, ``model.vllm``, ``model.rollout_correction``) as dataclasses
in code and plain dicts in hyper-parameters and checkpoints (``torch.load(weights_only=True)``
refuses dataclasses).

A mapping with a key the dataclass lacks, or a value of the wrong type, stops with one line naming
the key and what it should be, instead of a ``TypeError`` from the constructor or a comparison.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether ``value`` fits the annotation; None where the annotation is not a simple one."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        answers = [_accepts(arg, value) for arg in typing.get_args(hint)]
        return True if any(answers) else (None if None in answers else False)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # YAML writes 2 for 2.0
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, (list, tuple)) and all(_accepts(item, v) is not False for v in value)
    return None


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))


def parse_config(cls: type[T], value: Any, key: str) -> T | None:
    """None, an instance of ``cls``, or a mapping of its fields, as an instance of ``cls``.

    ``key`` is the option's YAML path (``model.lora``), named in every error."""
    if value is None or isinstance(value, cls):
        return value
    known = [f.name for f in fields(cls)]
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping of {known} or null (got {value!r})")  # noqa: TRY004  (the CLI prints ValueErrors as one line)
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for name, item in value.items():
        if _accepts(hints[name], item) is False:
            raise ValueError(f"{key}.{name} must be {_type_name(hints[name])} (got {item!r} of type {type(item).__name__})")
    return cls(**value)


def config_dict(cls: type, value: Any, key: str) -> dict[str, Any] | None:
    """The validated options as a plain dict (what ``save_hyperparameters`` stores)."""
    parsed = parse_config(cls, value, key)
    return None if parsed is None else asdict(parsed)
