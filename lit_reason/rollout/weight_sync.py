"""The trainer's weights in the form an inference engine loads: Hugging Face names, full tensors,
LoRA merged, one tensor at a time (so syncing never holds a second copy of the model).

* a peft-wrapped policy: ``base_model.model.`` and ``.base_layer`` leave the names, each LoRA
  layer yields ``W + delta`` (peft's own ``get_delta_weight``), adapter tensors are skipped and a
  ``modules_to_save`` copy replaces its original;
* a sharded policy (FSDP2 / DTensor parameters): each parameter is gathered on its own with
  ``full_tensor()`` right before it is yielded, then dropped.

No disk: the tensors go straight into the engine's ``load_weights`` (see
:func:`lit_reason.rollout.vllm_engine.VLLMSession.sync`).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

_PEFT_PREFIX = "base_model.model."


def _is_lora_layer(module: torch.nn.Module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "get_delta_weight")


def _full(t: Tensor) -> Tensor:
    """A full (unsharded) detached tensor: DTensor shards are gathered, plain tensors pass through."""
    full_tensor = getattr(t, "full_tensor", None)
    return (full_tensor() if callable(full_tensor) else t).detach()


def _clean_name(name: str) -> str:
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX):]
    name = name.replace("._fsdp_wrapped_module", "").replace("_orig_mod.", "")
    return name.replace(".base_layer.", ".")


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


def inference_weights(model: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    """``(hf_name, tensor)`` for every parameter the inference model needs, one at a time."""
    lora_layers = {name: m for name, m in model.named_modules() if _is_lora_layer(m)}
    seen: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=True):
        if ".lora_" in name or ".original_module." in name:
            continue  # adapter factors are merged below; a modules_to_save copy replaces its original
        out_name = name
        if ".modules_to_save." in name:
            head, _, rest = name.partition(".modules_to_save.")
            out_name = head + "." + rest.split(".", 1)[1]  # drop the adapter name
        tensor = _full(param)
        owner = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
        if owner in lora_layers and name.endswith(".base_layer.weight"):
            delta = _lora_delta(lora_layers[owner])
            if delta is not None:
                tensor = tensor + _full(delta).to(tensor.dtype)
        out_name = _clean_name(out_name)
        if out_name in seen:
            continue
        seen.add(out_name)
        yield out_name, tensor
