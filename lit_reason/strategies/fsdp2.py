"""FSDP2 (torch's ``fully_shard``) for a causal LM: each decoder layer one unit, then the model root.

Lightning's ``ModelParallelStrategy`` shards nothing itself: the LightningModule's
``configure_model`` has to call ``fully_shard`` (GRPO does it through :func:`shard_causal_lm`).
Each decoder layer is its own unit so that only one layer's full weights exist at a time; the
root unit holds what is left (embeddings, final norm, LM head, tied or not). ``configure_model``
can run more than once per process (fit, then validate / test), so sharding is idempotent.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _is_fsdp2(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of ``model`` (a transformers model, possibly inside a peft wrapper):
    the modules whose class is listed in a transformers model's ``_no_split_modules`` (the
    layers transformers itself never splits across devices); [] when none is found."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names and m is not model]


def shard_causal_lm(model: nn.Module, mesh) -> bool:
    """``fully_shard`` each decoder layer, then ``model`` itself, over the 1-D ``mesh``; False when
    ``model`` was sharded already (nothing done). Frozen parameters (a reference model, LoRA's
    base) are sharded like trained ones; FSDP2 keeps them out of the gradient reduction."""
    from torch.distributed.fsdp import fully_shard

    if _is_fsdp2(model):
        return False
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(f"FSDP2: found no decoder layers in {type(model).__name__} (no transformers "
                         "_no_split_modules): use DDP or DeepSpeed for this model")
    for layer in layers:
        if not _is_fsdp2(layer):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return True


def unsharded_trainable(module: nn.Module) -> list[str]:
    """Names of trainable parameters of ``module`` that are not FSDP2 shards (DTensors): under
    ``ModelParallelStrategy`` nothing reduces their gradients across ranks."""
    from torch.distributed.tensor import DTensor

    return [n for n, p in module.named_parameters() if p.requires_grad and not isinstance(p, DTensor)]


def full_norm(tensor: torch.Tensor) -> torch.Tensor:
    """The 2-norm of a (possibly sharded) tensor as a plain tensor: a DTensor shard's norm is
    reduced over its mesh."""
    norm = tensor.detach().float().norm()
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def all_ranks_done_on(device: Callable[[], torch.device]):
    """``done(local) -> bool``: whether every rank's rollout rows have ended (an all-reduce of
    ``local`` on ``device()``, read when called: the module moves after this is set up). Under
    sharded weights each decode step gathers weights, so the ranks must take the same number of
    steps (lit_reason.rollout.kv_cache ``all_ranks_done``)."""
    import torch.distributed as dist

    def done(local: bool) -> bool:
        flag = torch.tensor([1.0 if local else 0.0], device=device())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() == 1.0)

    return done
