"""LoRA checkpoints without the frozen base: only what trains is saved, the base is re-read.

A LoRA run trains a few million adapter weights on a base of billions that never change, yet a
Lightning checkpoint holds the module's whole state dict: 15 GB per checkpoint for a 7B model in
bfloat16, for a 50 MB adapter. When the base is a pretrained model that the run loads from a path
or the hub (not a random-init preset, which only the seed reproduces), the frozen weights are left
out and a fingerprint of them is saved instead. Resume (and ``lit-reason export``) rebuilds the
module from the checkpoint's ``model`` hyper-parameter, checks the fingerprint, and puts the live
base weights back into the state dict before Lightning loads it strictly, so a base that changed
on disk stops with one line instead of a silently different model.

Kept full: presets, ``lora.save_base: true``, and sharded strategies (FSDP, DeepSpeed, model
parallel), whose state dicts are not plain tensors of the whole module on one rank.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from lit_reason.models.policy import PRESETS

#: where the record of a slimmed checkpoint lives (under the module's own ``checkpoint["lit_reason"]``)
RECORD = "lora_base"


def base_fingerprint(tensors: Iterable[torch.Tensor]) -> list[float]:
    """``[sum, sum of squares, element count]`` over the tensors, in float64: equal for the same
    weights, and different for any other base one would plausibly point a run at."""
    total = squares = count = 0.0
    with torch.no_grad():
        for t in tensors:
            values = t.detach().double()
            total += float(values.sum())
            squares += float(values.square().sum())
            count += t.numel()
    return [total, squares, count]


def same_fingerprint(a: list[float], b: list[float]) -> bool:
    """Equal up to float64 summation order (a GPU and a CPU sum differ in the last bits)."""
    return a[2] == b[2] and all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6) for x, y in zip(a[:2], b[:2]))


def trained_keys(module: torch.nn.Module, prefix: str = "policy.") -> set[str]:
    """State-dict keys of the policy's parameters that train (LoRA: the adapters)."""
    return {prefix + name for name, p in getattr(module, prefix.rstrip(".")).named_parameters() if p.requires_grad}


def can_slim(model_name: str, strategy: Any, save_base: bool) -> bool:
    """Whether a LoRA checkpoint may leave its base out (see the module docstring)."""
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    return not save_base and model_name not in PRESETS and isinstance(strategy, (SingleDeviceStrategy, DDPStrategy))


def slim_checkpoint(checkpoint: dict, trained: set[str], model_name: str, prefix: str = "policy.") -> None:
    """Drop the policy's entries of ``checkpoint["state_dict"]`` that do not train (the base, tied
    copies such as ``lm_head.weight`` and persistent buffers included) and record their
    fingerprint (in place)."""
    state = checkpoint["state_dict"]
    frozen = sorted(k for k in state if k.startswith(prefix) and k not in trained)
    record = {"model": model_name, "keys": frozen, "fingerprint": base_fingerprint(state[k] for k in frozen)}
    for k in frozen:
        del state[k]
    checkpoint.setdefault("lit_reason", {})[RECORD] = record


def check_base(record: dict, live_state: dict[str, torch.Tensor], model_name: str) -> None:
    """Raise one line unless ``live_state`` holds the base weights that ``record`` fingerprinted."""
    missing = [k for k in record["keys"] if k not in live_state]
    if missing:
        raise ValueError(f"checkpoint: a LoRA checkpoint without its base, and this module has no {missing[0]!r}: "
                         f"build it with the settings it was trained with (model.model: {record['model']})")
    if not same_fingerprint(base_fingerprint(live_state[k] for k in record["keys"]), record["fingerprint"]):
        raise ValueError(f"checkpoint: a LoRA checkpoint holds only the adapters, and the base model loaded now "
                         f"(model.model: {model_name}) is not the one it was trained on ({record['model']}): "
                         "point model.model at the same weights")


def restore_base(checkpoint: dict, live_state: dict[str, torch.Tensor], model_name: str) -> None:
    """Put the live base weights back into a slimmed ``checkpoint`` (in place), after checking
    that they are the weights it was trained on; a full checkpoint is left as it is."""
    record = (checkpoint.get("lit_reason") or {}).get(RECORD)
    if record is None:
        return
    check_base(record, live_state, model_name)
    checkpoint["state_dict"].update({k: live_state[k] for k in record["keys"]})
