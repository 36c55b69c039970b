"""``package.module:name`` (or ``package.module.name``) strings from YAML to the objects they name."""

from __future__ import annotations

import importlib
from typing import Any


def import_path(path: str, option: str, choices: list[str] | tuple[str, ...] = ()) -> Any:
    """The object ``path`` names; one ``ValueError`` line naming ``option`` (the YAML key) and the
    built-in ``choices`` when it cannot be imported."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        builtins = f"one of {sorted(choices)} or " if choices else ""
        raise ValueError(f"{option}={path!r}: not found ({err}); use {builtins}'package.module:name'") from err
