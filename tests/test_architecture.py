"""The architecture holds: layers import only downwards, and every class path, import, module and
file that the docs, README and configs name exists (docs/architecture.md draws the layers)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: rank of each layer: a module may import its own layer and any layer of a LOWER rank, nothing else
LAYERS = {
    "lit_reason.utils": 0,
    "lit_reason.algorithms": 1, "lit_reason.tasks": 1, "lit_reason.strategies": 1, "lit_reason.precision": 1,
    "lit_reason.models": 2, "datamodules": 2,
    "lit_reason.rollout": 3,
    "lit_reason.rollout_step": 4,
    "lit_reason.modules": 5,
    "callbacks": 6,
    "lit_reason.app": 7,
}
PACKAGES = ("lit_reason", "callbacks", "datamodules")


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (the longest matching prefix), or None."""
    best = None
    for layer in LAYERS:
        if (module == layer or module.startswith(layer + ".")) and (best is None or len(layer) > len(best)):
            best = layer
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in the file, function-level ones included."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from lit_reason import algorithms` imports a layer: judge it by that layer
            found += [(node.lineno, base if layer_of(base) else f"{base}.{alias.name}") for alias in node.names]
    return found


def upward_imports(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        mine = layer_of(module_name(path))
        for line, target in imported_modules(path):
            theirs = layer_of(target)
            if mine is None or theirs is None or theirs == mine:
                continue
            if LAYERS[theirs] >= LAYERS[mine]:
                problems.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {target} ({theirs})")
    return problems


def project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_layer_imports_a_higher_or_sibling_one():
    assert upward_imports(project_files()) == []


def test_every_project_module_belongs_to_a_layer():
    loose = [module_name(p) for p in project_files() if layer_of(module_name(p)) is None]
    assert loose == ["lit_reason"]  # only the package's own __init__ stays at the top


def test_the_walker_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a model-layer file importing the modules layer is reported,
    also from inside a function."""
    fake = ROOT / "lit_reason" / "models" / "_upward_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        "def f():\n    from lit_reason.modules.grpo import GRPO\n" if self == fake else Path.__dict__["read_text"](self)))
    assert upward_imports([fake]) == ["lit_reason/models/_upward_probe.py:2 (lit_reason.models) imports "
                                      "lit_reason.modules.grpo (lit_reason.modules)"]


# --------------------------------------------------------------------------- names the docs use
DOTTED = re.compile(r"(?<![\w/.-])((?:lit_reason|datamodules|callbacks)(?:\.[A-Za-z_]\w*)+)")
FROM_IMPORT = re.compile(r"^\s*from ((?:lit_reason|datamodules|callbacks)[\w.]*) import ([\w, ]+)", re.M)
RUN_MODULE = re.compile(r"python3? -m ((?:lit_reason|datamodules|callbacks|benchmarks|experiments)[\w.]*)")
FILE_PATH = re.compile(r"(?<![\w/.-])((?:lit_reason|datamodules|callbacks)/[\w/]+\.py)\b")


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "setup.cfg", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted((ROOT / "configs").rglob("*.yaml")) + sorted((ROOT / "configs").rglob("*.sh"))
    return files


def resolve(dotted: str) -> bool:
    """A module, or an attribute chain on the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(name)
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def named_in_docs() -> list[tuple[str, str]]:
    """``(where, what)`` for every dotted name, import, ``python -m`` target and file path."""
    found = []
    for path in doc_files():
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        found += [(where, m.group(1)) for m in DOTTED.finditer(text)]
        for m in FROM_IMPORT.finditer(text):
            found += [(where, f"{m.group(1)}.{name.strip()}") for name in m.group(2).split(",") if name.strip()]
        found += [(where, "-m " + m.group(1)) for m in RUN_MODULE.finditer(text)]
        found += [(where, "file " + m.group(1)) for m in FILE_PATH.finditer(text)]
    return sorted(set(found))


def test_docs_readme_and_configs_name_only_what_exists():
    names = named_in_docs()
    assert len(names) > 100  # the scan sees the docs (class paths, imports, commands, files)
    missing = []
    for where, what in names:
        if what.startswith("-m "):
            ok = importlib.util.find_spec(what[3:]) is not None
        elif what.startswith("file "):
            ok = (ROOT / what[5:]).is_file()
        else:
            ok = resolve(what)
        if not ok:
            missing.append(f"{where}: {what}")
    assert missing == []


@pytest.mark.parametrize("dotted,ok", [("lit_reason.modules.GRPO", True), ("lit_reason.modules.grpo.GRPO.training_step", True),
                                       ("lit_reason.objectives", False), ("lit_reason.modules.NoSuchModule", False)])
def test_resolve_tells_a_moved_name_from_a_real_one(dotted, ok):
    assert resolve(dotted) is ok
