"""What GRPO needs to run under each Lightning strategy, kept out of the algorithm's file.

Sharded weights change four things in a GRPO step, and nothing else:
  * FSDP1 runs the whole step inside its root unit's forward, where it refuses a backward and
    reshards after one (lit_reason.strategies.fsdp1): :meth:`StrategyHooks.manual_backward` and
    :meth:`StrategyHooks._enter_fsdp1_root`;
  * ModelParallelStrategy means FSDP2, applied per decoder layer in :meth:`configure_model`
    (lit_reason.strategies.fsdp2);
  * every rank must take the same number of decode steps, since each forward gathers weights
    together (:meth:`_decode_in_lockstep`);
  * gradient norms and clipping must see every shard; DeepSpeed clips in its own ``step()``.
The mixin reads ``policy``, ``ref_model``, ``lora``, ``engine`` / ``val_engine`` and
``hparams.max_grad_norm`` / ``hparams.ref_quantization`` from the module it is mixed into.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from lit_reason.strategies.deepspeed_clipping import set_deepspeed_gradient_clipping
from lit_reason.strategies.fsdp1 import backward_in_root_forward, enter_root_forward, fsdp1_root
from lit_reason.strategies.fsdp2 import all_ranks_done_on, full_norm, shard_causal_lm, unsharded_trainable
from lit_reason.rollout import RolloutEngine
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine


class StrategyHooks(L.LightningModule):
    """Strategy plumbing of the GRPO family (DDP needs none of it; FSDP1, FSDP2, DeepSpeed do)."""

    def _wrapped_root(self) -> torch.nn.Module | None:
        """The module the strategy wrapped (under FSDP1 its root unit holds the policy's embeddings)."""
        return self.trainer.strategy.model if self._trainer is not None else None

    def _fsdp1_root(self) -> torch.nn.Module | None:
        """Under Lightning's FSDPStrategy (FSDP1): its root unit, in whose forward the steps run."""
        return fsdp1_root(getattr(self._trainer.strategy, "model", None)) if self._trainer is not None else None

    def _enter_fsdp1_root(self) -> None:
        """Under FSDP1, the root unit's weights (embeddings, norm, head) gathered for a forward: a
        backward earlier in the same step resharded them (lit_reason.strategies.fsdp1)."""
        root = self._fsdp1_root()
        if root is not None:
            enter_root_forward(root)

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's, with FSDP1's root-unit pre-backward run first: under FSDPStrategy the
        step runs inside the root's forward, where FSDP1 alone refuses a backward (lit_reason.strategies.fsdp1)."""
        root = self._fsdp1_root()
        if root is None:
            return super().manual_backward(loss, *args, **kwargs)
        backward_in_root_forward(root, loss, lambda value: super(StrategyHooks, self).manual_backward(value, *args, **kwargs))

    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy``: FSDP2 over its data-parallel mesh, each
        decoder layer one unit, then the policy root, and the same for a frozen reference copy
        (lit_reason.strategies.fsdp2). Choosing that strategy is the switch (``configs/scale/fsdp2.yaml``);
        any other strategy leaves the modules as they are. Idempotent: Lightning may call this
        again (validate / test after fit)."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = self._trainer.strategy if self._trainer is not None else None
        if not isinstance(strategy, ModelParallelStrategy):
            return
        mesh = self.device_mesh
        if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
            raise ValueError("ModelParallelStrategy: GRPO shards with FSDP2 only: set tensor_parallel_size=1 and "
                             "data_parallel_size=<devices> (configs/scale/fsdp2.yaml)")
        if self.hparams.ref_quantization is not None:
            raise ValueError("model.ref_quantization: FSDP2 cannot shard bitsandbytes weights: unset it (the sharded "
                             "reference is the better trade there) or use DDP")
        dp = mesh["data_parallel"]
        self._decode_in_lockstep()
        shard_causal_lm(self.policy, dp)
        if self.ref_model is not None and self.lora is None:  # with LoRA the reference is the policy itself
            shard_causal_lm(self.ref_model, dp)
        left = unsharded_trainable(self)
        if left:
            raise ValueError(f"{type(self).__name__} under ModelParallelStrategy: trainable parameters outside the "
                             f"policy ({', '.join(left[:3])}) would not be averaged across ranks: use DDP or DeepSpeed")

    def _setup_strategy(self) -> None:
        """From ``setup``: lockstep decoding under FSDP1 / ZeRO-3 (FSDP2's is set in configure_model),
        and ``max_grad_norm`` into a DeepSpeed config before its engine is built from it."""
        if self._trainer is None:
            return
        from lightning.pytorch.strategies import FSDPStrategy

        strategy = self.trainer.strategy
        stage3 = (getattr(strategy, "config", None) or {}).get("zero_optimization", {}).get("stage") == 3
        if stage3 and self.hparams.get("rollout_engine", "builtin") == "vllm":
            raise ValueError("model.rollout_engine=vllm under DeepSpeed ZeRO-3: the weight sync would stream empty "
                             "partitions; use deepspeed_stage_2, FSDP, or model.rollout_engine=builtin")
        if isinstance(strategy, FSDPStrategy) or stage3:
            self._decode_in_lockstep()
        set_deepspeed_gradient_clipping(strategy, self.hparams.max_grad_norm)

    def _decode_in_lockstep(self) -> None:
        """Sharded weights (FSDP1/2, ZeRO-3), on any number of devices (one included): the plain
        engine samples, since the static engine's compiled graphs would capture the weight gathers;
        with several ranks every rollout takes the same number of decode steps, since each step's
        forward gathers weights together (lit_reason.rollout.kv_cache)."""
        if self._trainer is None:
            return
        for name in ("engine", "val_engine"):
            engine = getattr(self, name)
            if isinstance(engine, StaticCacheRolloutEngine):
                self._warn_once("fast_generation", "model.fast_generation is off under sharded weights (FSDP, "
                                "ZeRO-3): the plain KV-cache engine samples")
                engine = RolloutEngine(engine.model, engine.tokenizer, engine.config)
                setattr(self, name, engine)
            if self.trainer.world_size > 1 and hasattr(engine, "all_ranks_done"):
                engine.all_ranks_done = all_ranks_done_on(lambda: self.device)

    def clip_grad_norm(self, optimizer, max_norm: float) -> None:
        """Clip by global norm. Under FSDP1 through the FSDP root's own ``clip_grad_norm_`` (it sees
        every shard), because Lightning's FSDP precision plugin refuses clipping by norm; under
        DeepSpeed not here: its engine clips in ``step()`` from the config's ``gradient_clipping``,
        which :meth:`_setup_strategy` set to ``max_grad_norm`` (lit_reason.strategies.deepspeed_clipping);
        elsewhere through Lightning."""
        from lightning.pytorch.strategies import DeepSpeedStrategy
        from torch.distributed.fsdp import FullyShardedDataParallel

        strategy = self._trainer.strategy if self._trainer is not None else None
        wrapped = getattr(strategy, "model", None)
        if isinstance(strategy, DeepSpeedStrategy):
            return
        if isinstance(wrapped, FullyShardedDataParallel):
            wrapped.clip_grad_norm_(max_norm)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")

    def _grad_norm(self) -> float:
        """Global gradient norm over every rank's shards (the logged ``grad_norm``)."""
        norms = [full_norm(p.grad) for p in self.parameters() if p.grad is not None]  # FSDP2: shards reduced
        total = torch.stack(norms).square().sum() if norms else torch.zeros((), device=self.device)
        if self._fsdp1_root() is not None:  # FSDP1: each rank holds a disjoint shard of every flat parameter
            torch.distributed.all_reduce(total)
        return float(total.sqrt())

    def _global_token_count(self, mask: Tensor) -> float:
        """Tokens of ``mask`` summed over ranks, divided by the world size (DDP averages grads)."""
        count = mask.sum().detach()
        if self.trainer.world_size > 1:
            count = self.trainer.strategy.reduce(count, reduce_op="sum") / self.trainer.world_size
        return max(float(count), 1.0)
