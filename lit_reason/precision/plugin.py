"""FP4Precision: a Lightning Precision plugin for simulated FP4 fully quantized training.

    trainer:
      plugins:
        - class_path: lit_reason.precision.FP4Precision
          init_args: {fmt: nvfp4, keep_first_blocks: 1, keep_last_blocks: 1}

``convert_module`` swaps every plain ``nn.Linear`` for an FP4Linear sharing its Parameters (so
checkpoints load back into unconverted models) except those under ``ignore_modules`` and in the
first/last ``keep_*_blocks`` transformer blocks. Everything else runs under autocast to
``dtype`` ("bfloat16" by default; "float32" disables autocast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable
from dataclasses import asdict
from typing import Any

import torch
from lightning.pytorch.plugins.precision import Precision
from torch import nn

from lit_reason.precision.fp4_linear import FP4Linear, FP4Settings

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_LIGHTNING_NAMES = {"bfloat16": "bf16-mixed", "float16": "16-mixed", "float32": "32-true"}


def find_block_list(module: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The ModuleList holding the most nn.Linear layers (a transformer's blocks), or None."""
    best, best_count = None, 0
    for name, child in module.named_modules():
        if isinstance(child, nn.ModuleList):
            count = sum(isinstance(m, nn.Linear) for m in child.modules())
            if count > best_count:
                best, best_count = (name, child), count
    return best


def name_matches(name: str, pattern: str) -> bool:
    """True when ``pattern``'s dotted components appear as a contiguous run in ``name``'s, so
    "lm_head" matches "lm_head" and "model.lm_head", "layers.0" matches "model.layers.0.mlp"
    but not "model.layers.10"."""
    return f".{pattern}." in f".{name}."


def swap_linears(module: nn.Module, settings: FP4Settings, ignore: Iterable[str]) -> list[str]:
    """Replace plain nn.Linear submodules in place by FP4Linear; returns the swapped names.

    A layer is skipped when its qualified name, or the name of one of its parents, matches an
    ``ignore`` entry (``name_matches``); subclasses of nn.Linear are left alone (they may own
    their forward).
    """
    ignore = tuple(ignore)
    swapped = []
    for name, child in list(module.named_modules()):
        if type(child) is not nn.Linear or any(name_matches(name, p) for p in ignore):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        setattr(parent, attr, FP4Linear.from_linear(child, settings))
        swapped.append(name)
    return swapped


class FP4Precision(Precision):
    """Simulated NVFP4/MXFP4 fully quantized training (FP4 all the way) for any LightningModule.

    Args:
        fmt: "nvfp4" or "mxfp4". mx_scale: MXFP4 scale rule, "ocp" (default) or "no_overflow".
        dtype: compute dtype of everything else, via autocast ("bfloat16", "float16", "float32").
        ignore_modules: module names kept in high precision, matched as whole dotted components
            anywhere in the qualified name (default ["lm_head"], which also catches
            "model.lm_head" inside a LightningModule).
        keep_first_blocks / keep_last_blocks: also keep the first/last k transformer blocks in
            high precision (the production NVFP4 recipe keeps about 15 % of linears).
        blocks: dotted path of the block ModuleList (default: the one with the most linears).
        quantize_weights / quantize_activations / quantize_gradients, *_rounding, qaf: see
            FP4Settings. ``qaf`` can also be flipped later (``set_qaf``), e.g. by the
            QuantizationNoiseMonitor; it is saved in checkpoints.
    """

    def __init__(
        self,
        fmt: str = "nvfp4",
        mx_scale: str = "ocp",
        dtype: str = "bfloat16",
        ignore_modules: list[str] | None = None,
        keep_first_blocks: int = 0,
        keep_last_blocks: int = 0,
        blocks: str | None = None,
        quantize_weights: bool = True,
        quantize_activations: bool = True,
        quantize_gradients: bool = True,
        activation_rounding: str = "nearest",
        weight_rounding: str = "nearest",
        gradient_rounding: str = "stochastic",
        wgrad_activation_rounding: str = "stochastic",
        qaf: bool = False,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"FP4Precision dtype={dtype!r} is unknown; use one of {sorted(_DTYPES)}")
        if keep_first_blocks < 0 or keep_last_blocks < 0:
            raise ValueError("FP4Precision keep_first_blocks/keep_last_blocks must be >= 0")
        self.settings = FP4Settings(
            fmt=fmt, mx_scale=mx_scale, quantize_weights=quantize_weights,
            quantize_activations=quantize_activations, quantize_gradients=quantize_gradients,
            activation_rounding=activation_rounding, weight_rounding=weight_rounding,
            gradient_rounding=gradient_rounding, wgrad_activation_rounding=wgrad_activation_rounding,
            qaf=qaf,
        )
        self.dtype = _DTYPES[dtype]
        self.precision = _LIGHTNING_NAMES[dtype]  # what trainer.precision reports
        self.ignore_modules = ["lm_head"] if ignore_modules is None else list(ignore_modules)
        self.keep_first_blocks, self.keep_last_blocks = keep_first_blocks, keep_last_blocks
        self.blocks = blocks
        self.fp4_layers: list[str] = []
        self._module: nn.Module | None = None

    # --- QAF switch -------------------------------------------------------------------------
    @property
    def qaf(self) -> bool:
        return self.settings.qaf

    def set_qaf(self, on: bool = True) -> None:
        """Quantization-aware fine-tuning: FP4 forward, high-precision backward and update."""
        self.settings.qaf = bool(on)

    # --- Lightning hooks ----------------------------------------------------------------------
    def kept_blocks(self, module: nn.Module) -> list[str]:
        """Qualified names of the first/last k blocks kept in high precision."""
        if not (self.keep_first_blocks or self.keep_last_blocks):
            return []
        if self.blocks is not None:
            name, blocks = self.blocks, module.get_submodule(self.blocks)
        else:
            found = find_block_list(module)
            if found is None:
                raise ValueError(
                    "FP4Precision keep_first_blocks/keep_last_blocks: no nn.ModuleList of blocks "
                    "found; set blocks: <dotted path to the block list>"
                )
            name, blocks = found
        n = len(blocks)
        idx = set(range(min(self.keep_first_blocks, n))) | set(range(max(n - self.keep_last_blocks, 0), n))
        prefix = f"{name}." if name else ""
        return [f"{prefix}{i}" for i in sorted(idx)]

    def convert_module(self, module: nn.Module) -> nn.Module:
        ignore = self.ignore_modules + self.kept_blocks(module)
        self.fp4_layers = swap_linears(module, self.settings, ignore)
        self._module = module
        return module

    def _device_type(self) -> str:
        if self._module is not None:
            for p in self._module.parameters():
                return p.device.type
        return "cuda" if torch.cuda.is_available() else "cpu"

    @contextlib.contextmanager
    def forward_context(self) -> Generator[None, None, None]:
        if self.dtype == torch.float32:
            yield
            return
        with torch.autocast(self._device_type(), dtype=self.dtype, cache_enabled=False):
            yield

    def state_dict(self) -> dict[str, Any]:
        return {"fp4_settings": asdict(self.settings)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("fp4_settings", {})
        if "qaf" in saved:
            self.set_qaf(saved["qaf"])
