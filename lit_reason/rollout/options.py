"""Option groups (``model.vllm``, ``model.rollout_correction``) as dataclasses in code and plain
dicts in hyper-parameters and checkpoints (``torch.load(weights_only=True)`` refuses dataclasses)."""

from __future__ import annotations

from dataclasses import asdict, fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def parse_options(cls: type[T], value: Any, key: str) -> T | None:
    """None, an instance of ``cls``, or a dict of its fields (unknown keys: one line naming them)."""
    if value is None or isinstance(value, cls):
        return value
    if is_dataclass(value):
        value = asdict(value)
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping of {sorted(f.name for f in fields(cls))} or null (got {value!r})")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**value)


def options_dict(cls: type, value: Any, key: str) -> dict[str, Any] | None:
    """The validated options as a plain dict (what ``save_hyperparameters`` stores)."""
    parsed = parse_options(cls, value, key)
    return None if parsed is None else asdict(parsed)
