"""The trainer's weights in the form an inference engine loads: Hugging Face names, full tensors,
LoRA merged, one tensor at a time (so syncing never holds a second copy of the model).

* a peft-wrapped policy: ``base_model.model.`` and ``.base_layer`` leave the names, each LoRA
  layer yields ``W + delta`` (peft's own ``get_delta_weight``), adapter tensors are skipped and a
  ``modules_to_save`` copy replaces its original;
* FSDP2 / DTensor parameters: each parameter is gathered on its own with ``full_tensor()`` right
  before it is yielded, then dropped;
* FSDP1 (``FullyShardedDataParallel``, flat parameters): one FSDP unit at a time (a wrapped
  decoder layer, then the next) is unsharded with ``summon_full_params(unit, recurse=False,
  writeback=False)``, its own parameters are copied out and yielded, and it is resharded before
  the next unit. The units are visited root first (FSDP initialises from the root). When the
  root wraps more than the policy (Lightning's FSDPStrategy wraps the LightningModule), pass it as
  ``root``: only the policy's parameters are yielded.

Every rank must call this together under FSDP (the gathers are collectives), as every rank's
engine sync does. No disk: the tensors go straight into the engine's ``load_weights`` (see
:func:`lit_reason.rollout.vllm_engine.VLLMSession.sync`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

_PEFT_PREFIX = "base_model.model."
_FSDP1_PREFIX = "_fsdp_wrapped_module."


def _is_lora_layer(module: torch.nn.Module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "get_delta_weight")


def _full(t: Tensor) -> Tensor:
    """A full (unsharded) detached tensor: DTensor shards are gathered, plain tensors pass through.
    A DeepSpeed ZeRO-3 partition (its local data is empty) is refused rather than streamed."""
    if hasattr(t, "ds_id"):
        raise ValueError("the weight sync met a DeepSpeed ZeRO-3 partitioned parameter: vLLM rollouts support ZeRO-1/2, "
                         "FSDP and DDP; use deepspeed_stage_2 or model.rollout_engine=builtin")
    full_tensor = getattr(t, "full_tensor", None)
    return (full_tensor() if callable(full_tensor) else t).detach()


def _strip_wrappers(name: str) -> str:
    return name.replace(_FSDP1_PREFIX, "").replace("_orig_mod.", "")


def _clean_name(name: str) -> str:
    return _strip_wrappers(name).removeprefix(_PEFT_PREFIX).replace(".base_layer.", ".")


def _lora_delta(module: torch.nn.Module) -> Tensor | None:
    """The summed delta of the active adapters of one LoRA layer (None when merged or disabled)."""
    if getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return None
    delta = None
    for adapter in getattr(module, "active_adapters", []) or []:
        if adapter not in module.lora_A:
            continue
        d = module.get_delta_weight(adapter)
        delta = d if delta is None else delta + d
    return delta


def _merged(named: Iterable[tuple[str, Tensor]], lora_layers: dict[str, torch.nn.Module], seen: set[str],
            copy: bool = False) -> Iterator[tuple[str, Tensor]]:
    """``(hf_name, tensor)`` for ``(policy-relative name, parameter)`` pairs: adapters merged, names cleaned."""
    for name, param in named:
        if ".lora_" in name or ".original_module." in name:
            continue  # adapter factors are merged below; a modules_to_save copy replaces its original
        out_name = name
        if ".modules_to_save." in name:
            head, _, rest = name.partition(".modules_to_save.")
            out_name = head + "." + rest.split(".", 1)[1]  # drop the adapter name
        out_name = _clean_name(out_name)
        if out_name in seen:
            continue
        seen.add(out_name)
        tensor = _full(param)
        owner = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
        delta = _lora_delta(lora_layers[owner]) if owner in lora_layers and name.endswith(".base_layer.weight") else None
        if delta is not None:
            yield out_name, tensor + _full(delta).to(tensor.dtype)  # a new tensor already
        else:
            yield out_name, (tensor.clone() if copy else tensor)


def fsdp1_units(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The FSDP1 units in ``module`` (itself included), root first; [] without FSDP1."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch built without distributed
        return []
    return FullyShardedDataParallel.fsdp_modules(module)


def _fsdp1_weights(model: torch.nn.Module, root: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    """One FSDP1 unit unsharded at a time (see the module docstring)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    modules = dict(root.named_modules())
    prefix = next((_strip_wrappers(n) for n, m in modules.items() if m is model), None)
    if prefix is None:
        raise ValueError("the FSDP root given for the weight sync does not contain the policy")
    prefix = prefix + "." if prefix else ""
    if str(getattr(root, "training_state", "")).endswith("FORWARD_BACKWARD"):
        raise RuntimeError("the weight sync ran inside an FSDP forward, where FSDP cannot gather weights: sync "
                           "before the step (GRPO does it in on_train_batch_start / on_validation_batch_start)")
    units = {n: m for n, m in modules.items() if isinstance(m, FullyShardedDataParallel)}
    lora_layers = {_strip_wrappers(n)[len(prefix):]: m for n, m in modules.items()
                   if _is_lora_layer(m) and _strip_wrappers(n).startswith(prefix)}
    seen: set[str] = set()
    names = [_strip_wrappers(n) for n in units]  # FSDP drops its prefix from names while unsharded
    for unit_name, unit in zip(names, units.values()):  # named_modules is pre-order: the root comes first
        nested = [n + "." for n in names if n != unit_name and n.startswith(unit_name + "." if unit_name else "")]
        with FullyShardedDataParallel.summon_full_params(unit, recurse=False, writeback=False):
            own = []
            for name, param in unit.named_parameters(remove_duplicate=True):
                full = _strip_wrappers(f"{unit_name}.{name}" if unit_name else name)
                if "_flat_param" in name or any(full.startswith(n) for n in nested):
                    continue  # a nested unit's (still sharded): it comes with that unit
                if full.startswith(prefix):
                    own.append((full[len(prefix):], param))
            yield from _merged(own, lora_layers, seen, copy=True)  # copies: the unit reshards on exit


def inference_weights(model: torch.nn.Module, root: torch.nn.Module | None = None) -> Iterator[tuple[str, Tensor]]:
    """``(hf_name, tensor)`` for every parameter the inference model needs, one at a time.

    ``root``: under FSDP1, the FSDP root when it wraps more than ``model`` (default: ``model``)."""
    root = model if root is None else root
    if fsdp1_units(root):
        yield from _fsdp1_weights(model, root)
        return
    lora_layers = {name: m for name, m in model.named_modules() if _is_lora_layer(m)}
    yield from _merged(model.named_parameters(remove_duplicate=True), lora_layers, set())
