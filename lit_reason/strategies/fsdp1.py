"""Backward inside the root unit's forward under FSDP1 (Lightning's ``FSDPStrategy``).

Lightning runs ``training_step`` inside the forward of the root ``FullyShardedDataParallel`` unit
(its forward redirection), and GRPO calls ``manual_backward`` there, once per micro-batch. FSDP1
prepares a unit for backward only from hooks on its forward's *outputs* (pre-backward: state,
final callback) and only after that forward returned, so the root unit's handle (embeddings,
final norm, LM head: what no decoder-layer unit holds) is still in ``FORWARD`` state when its
gradient arrives: ``Expects BACKWARD_PRE or BACKWARD_POST state but got FORWARD`` (Lightning
issue #19626, open). Here each backward is made to look like one after a root forward:

* :func:`enter_root_forward` runs FSDP1's own pre-forward for the root (unshard, register the
  post-backward hook) if the root is not in a forward already: after a backward the final
  callback has resharded it, and the next forward inside the same ``training_step`` needs it.
* :func:`backward_in_root_forward` sets the root to where its post-forward would leave it and
  runs FSDP1's own pre-backward hook from a hook on the loss, so the final callback reduces and
  reshards every unit as after an ordinary step; the root is then IDLE, so clipping
  (``clip_grad_norm_``) and ``optimizer.step()`` work on the shards as outside a forward.

These call private functions of ``torch.distributed.fsdp._runtime_utils`` (the hooks FSDP1
itself registers), checked against torch 2.13; ``tests/test_fsdp.py`` trains through them.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn


def fsdp1_root(module: nn.Module | None) -> nn.Module | None:
    """``module`` when it is an FSDP1 root unit (Lightning's ``strategy.model`` under FSDPStrategy)."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch without distributed
        return None
    if isinstance(module, FullyShardedDataParallel) and getattr(module, "_is_root", False):
        return module
    return None


def enter_root_forward(root: nn.Module) -> None:
    """The root unit's parameters unsharded and in FORWARD state (a no-op when they are)."""
    from torch.distributed.fsdp._common_utils import HandleTrainingState
    from torch.distributed.fsdp._runtime_utils import _pre_forward, _pre_forward_unshard

    handle = root._handle
    if handle is None or handle._training_state == HandleTrainingState.FORWARD:
        return
    _pre_forward(root, handle, _pre_forward_unshard, root, (), {})


def backward_in_root_forward(root: nn.Module, loss: torch.Tensor, backward: Callable[[torch.Tensor], None]) -> None:
    """``backward(loss)`` inside the root unit's forward, with FSDP1's pre-backward for the root."""
    from torch.distributed.fsdp._common_utils import TrainingState
    from torch.distributed.fsdp._common_utils import HandleTrainingState
    from torch.distributed.fsdp._runtime_utils import _pre_backward_hook

    enter_root_forward(root)  # registers the root's post-backward hook if the last backward removed it
    handle = root._handle
    root.training_state = TrainingState.IDLE  # as the root's post-forward leaves it
    root._post_backward_callback_queued = False
    if handle is not None:
        handle._training_state = HandleTrainingState.IDLE
        handle._needs_pre_backward_unshard = False  # the root stays unsharded after its forward
    loss.register_hook(functools.partial(_pre_backward_hook, root, root, handle))
    backward(loss)
