"""``package.module:name`` (or ``package.module.name``) strings from YAML to the objects they name.

One resolver for rewards, environments, tools and factories, so each gets the same one-line errors:
a typo of a built-in name gets a suggestion, a module that does not exist is told apart from a
user's module that fails while importing (that error is shown as it is: it is the user's bug)."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any


def import_path(path: str, option: str, choices: Iterable[str] | Mapping[str, Any] = ()) -> Any:
    """The object ``path`` names: a key of ``choices`` when it is a mapping of built-ins, else an
    importable ``package.module:name``. One ``ValueError`` line naming ``option`` (the YAML key or
    what is being resolved) and the built-in ``choices`` when it cannot be resolved."""
    if isinstance(choices, Mapping) and path in choices:
        return choices[path]
    names = sorted(choices)
    hint = f"use one of {names} or 'package.module:name'" if names else "use 'package.module:name'"
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        close = difflib.get_close_matches(path, names, n=1)
        raise ValueError(f"unknown {option} {path!r}: {f'did you mean {close[0]!r}? ' if close else ''}{hint}")
    if os.getcwd() not in sys.path:  # `python script.py` would see the working directory; the console script does not
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(f"{option} {path!r}: importing {module_name!r} failed: ModuleNotFoundError: {err}") from err
        raise ValueError(f"unknown {option} {path!r}: no module {err.name!r} (is it on PYTHONPATH?): {hint}") from err
    except Exception as err:  # noqa: BLE001 - the user's module raised while importing: show that error
        raise ValueError(f"{option} {path!r}: importing {module_name!r} failed: {type(err).__name__}: {err}") from err
    if not hasattr(module, attr):
        raise ValueError(f"unknown {option} {path!r}: module {module_name!r} has no {attr!r}: {hint}")
    return getattr(module, attr)
