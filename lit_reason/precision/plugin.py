"""FP4Precision: a Lightning Precision plugin for simulated FP4 fully quantized training.

    trainer:
      plugins:
        - class_path: lit_reason.precision.FP4Precision
          init_args: {fmt: nvfp4, keep_first_blocks: 1, keep_last_blocks: 1}

``convert_module`` turns every plain ``nn.Linear`` into an FP4Linear *in place* (the module
object and its Parameters stay the same, so checkpoints load back into unconverted models and
FSDP2's references to the module stay valid) except those under ``ignore_modules``, in the
first/last ``keep_*_blocks`` transformer blocks, and in a frozen KL reference model
(``reference_modules``, or any module with ``fp4_exclude = True``). Everything else runs under
autocast to ``dtype`` ("bfloat16" by default; "float32" disables autocast).

After every optimizer step the plugin advances the rounding-noise step counter and drops the
cached Q(W) of every layer. ``FP4FSDPPrecision`` is the same plugin as an ``FSDPPrecision``, the
only kind Lightning's FSDPStrategy accepts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterable
from dataclasses import asdict
from typing import Any

import torch
from lightning.pytorch.plugins.precision import FSDPPrecision, Precision
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lit_reason.precision.fp4_linear import FP4Linear, FP4Settings

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_LIGHTNING_NAMES = {"bfloat16": "bf16-mixed", "float16": "16-mixed", "float32": "32-true"}
#: settings fields restored from a checkpoint (the numerics of the run); runtime fields are not
_RESTORED = ("fmt", "mx_scale", "quantize_weights", "quantize_activations", "quantize_gradients",
             "activation_rounding", "weight_rounding", "gradient_rounding", "wgrad_activation_rounding",
             "qaf", "seed", "step")


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


_FSDP_CLASSES: dict[type, type] = {}


def fp4_class_for(cls: type) -> type | None:
    """The FP4 class an nn.Linear of class ``cls`` becomes: FP4Linear for nn.Linear, an
    ``FSDP``-prefixed FP4Linear for a Linear that FSDP2's fully_shard wrapped itself, else None
    (other subclasses may own their forward)."""
    if cls is nn.Linear:
        return FP4Linear
    bases = cls.__bases__
    if len(bases) == 2 and bases[1] is nn.Linear and bases[0].__name__ == "FSDPModule":
        if cls not in _FSDP_CLASSES:
            _FSDP_CLASSES[cls] = type(f"FSDP{FP4Linear.__name__}", (bases[0], FP4Linear), {})
        return _FSDP_CLASSES[cls]
    return None


def excluded_prefixes(module: nn.Module) -> list[str]:
    """Names of submodules marked ``fp4_exclude = True`` (e.g. a frozen reference model)."""
    return [name for name, m in module.named_modules() if name and getattr(m, "fp4_exclude", False)]


def swap_linears(module: nn.Module, settings: FP4Settings, ignore: Iterable[str]) -> list[str]:
    """Turn plain nn.Linear submodules into FP4Linear in place; returns the converted names.

    A layer is skipped when its qualified name, or the name of one of its parents, matches an
    ``ignore`` entry (``name_matches``). Layer indices (for the noise streams) follow the order
    of ``named_modules``, so they are the same on every rank and every run."""
    ignore = tuple(ignore)
    swapped = []
    for name, child in list(module.named_modules()):
        if not isinstance(child, nn.Linear) or isinstance(child, FP4Linear):
            continue
        cls = fp4_class_for(type(child))
        if cls is None or any(name_matches(name, p) for p in ignore):
            continue
        cls.convert_in_place(child, settings, layer=len(swapped))
        child.__class__ = cls
        swapped.append(name)
    return swapped


class FP4Precision(Precision):
    """Simulated NVFP4/MXFP4 fully quantized training (FP4 all the way) for any LightningModule.

    Args:
        fmt: "nvfp4" or "mxfp4". mx_scale: MXFP4 scale rule of the nearest-rounded operands,
            "ocp" (default) or "no_overflow" (stochastically rounded ones always use the latter).
        dtype: compute dtype of everything else, via autocast ("bfloat16", "float16", "float32").
        ignore_modules: module names kept in high precision, matched as whole dotted components
            anywhere in the qualified name (default ["lm_head"], which also catches
            "model.lm_head" inside a LightningModule).
        keep_first_blocks / keep_last_blocks: also keep the first/last k transformer blocks in
            high precision (the production NVFP4 recipe keeps about 15 % of linears).
        blocks: dotted path of the block ModuleList (default: the one with the most linears).
        quantize_reference: also convert the frozen KL reference (``reference_modules``,
            default ["ref_model"], and modules with ``fp4_exclude = True``); off by default so
            the KL term compares against a high-precision reference.
        seed: seed of the rounding noise (default: the ``seed_everything`` seed, else 0); mixed
            with the rank, the optimizer step and the layer, never drawn from the global RNG.
        cache_weights: quantize W once per optimizer step (default True; costs one copy of the
            FP4 weights in the compute dtype per blocking axis).
        quantize_weights / quantize_activations / quantize_gradients, *_rounding, qaf: see
            FP4Settings. ``qaf`` can also be flipped later (``set_qaf``), globally or per layer,
            e.g. by the QuantizationNoiseMonitor; format, QAF state and noise step are saved
            in checkpoints and restored on resume.
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
        quantize_reference: bool = False,
        reference_modules: list[str] | None = None,
        seed: int | None = None,
        cache_weights: bool = True,
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
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", "0"))
        self.settings = FP4Settings(
            fmt=fmt, mx_scale=mx_scale, quantize_weights=quantize_weights,
            quantize_activations=quantize_activations, quantize_gradients=quantize_gradients,
            activation_rounding=activation_rounding, weight_rounding=weight_rounding,
            gradient_rounding=gradient_rounding, wgrad_activation_rounding=wgrad_activation_rounding,
            qaf=qaf, seed=seed, cache_weights=cache_weights,
        )
        self.dtype = _DTYPES[dtype]
        self.precision = _LIGHTNING_NAMES[dtype]  # what trainer.precision reports
        self.ignore_modules = ["lm_head"] if ignore_modules is None else list(ignore_modules)
        self.keep_first_blocks, self.keep_last_blocks = keep_first_blocks, keep_last_blocks
        self.blocks = blocks
        self.quantize_reference = quantize_reference
        self.reference_modules = ["ref_model"] if reference_modules is None else list(reference_modules)
        self.fp4_layers: list[str] = []
        self._module: nn.Module | None = None
        self._pending_layer_qaf: list[str] = []

    # --- layers and the QAF switch ------------------------------------------------------------
    def fp4_modules(self) -> list[tuple[str, FP4Linear]]:
        """(name, layer) of every converted layer, in layer-index order."""
        if self._module is None:
            return []
        return [(n, self._module.get_submodule(n)) for n in self.fp4_layers]

    @property
    def qaf(self) -> bool:
        """True when every layer trains in QAF (globally switched)."""
        return self.settings.qaf

    def set_qaf(self, on: bool = True, layers: Iterable[str] | None = None) -> None:
        """Quantization-aware fine-tuning: FP4 forward, high-precision backward and update, for
        every layer (``layers=None``) or for the named FP4 layers only."""
        if layers is None:
            self.settings.qaf = bool(on)
            return
        wanted = set(layers)
        for name, layer in self.fp4_modules():
            if name in wanted:
                layer.fp4_state.qaf = bool(on)

    def qaf_layers(self) -> list[str]:
        """Layers in QAF (all of them after a global switch)."""
        return [n for n, m in self.fp4_modules() if self.settings.qaf or m.fp4_state.qaf]

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
        if not self.quantize_reference:
            ignore += self.reference_modules + excluded_prefixes(module)
        self.fp4_layers = swap_linears(module, self.settings, ignore)
        self._module = module
        if self._pending_layer_qaf:
            self.set_qaf(True, self._pending_layer_qaf)
            self._pending_layer_qaf = []
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

    def optimizer_step(self, optimizer: Any, model: Any, closure: Callable[[], Any], **kwargs: Any) -> Any:
        out = super().optimizer_step(optimizer, model, closure, **kwargs)
        self.after_optimizer_step()
        return out

    def after_optimizer_step(self) -> None:
        """New weights: next noise step, cached Q(W) dropped."""
        self.settings.step += 1
        for _, layer in self.fp4_modules():
            layer.fp4_state.clear_cache()

    def state_dict(self) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self.settings).items() if k in _RESTORED}
        return {"fp4_settings": settings, "qaf_layers": [n for n, m in self.fp4_modules() if m.fp4_state.qaf]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the checkpoint's format, rounding, QAF state and noise step (warning when the
        configured format differs: a resumed run keeps the numerics it was trained with)."""
        saved = state_dict.get("fp4_settings", {})
        changed = {k: (getattr(self.settings, k), v) for k, v in saved.items()
                   if k in _RESTORED and k not in ("qaf", "step") and getattr(self.settings, k) != v}
        if changed:
            rank_zero_warn(f"FP4Precision: restoring the checkpoint's FP4 settings {changed} "
                           "(configured -> checkpoint)")
        for k, v in saved.items():
            if k in _RESTORED:
                setattr(self.settings, k, v)
        self.settings.__post_init__()
        layers = list(state_dict.get("qaf_layers", []))
        if self._module is None:
            self._pending_layer_qaf = layers
        else:
            self.set_qaf(True, layers)


class FP4FSDPPrecision(FP4Precision, FSDPPrecision):
    """FP4Precision for Lightning's FSDPStrategy (which only accepts an FSDPPrecision) and for
    ModelParallelStrategy (FSDP2). Same arguments; ``cache_weights`` defaults to False because
    FSDP frees the gathered weights after use (a cache would keep a full copy of every layer)."""

    def __init__(self, *args: Any, cache_weights: bool = False, **kwargs: Any) -> None:
        FP4Precision.__init__(self, *args, cache_weights=cache_weights, **kwargs)
        self.scaler = None
        self._desired_input_dtype = torch.float32  # inputs stay as given; autocast handles compute
