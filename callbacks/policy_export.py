"""PolicyExport: write the trained policy as a Hugging Face model directory when ``fit`` ends.

    trainer:
      callbacks:
        - class_path: callbacks.PolicyExport
          init_args: {dirpath: exported/, dtype: bfloat16}

Under FSDP / DeepSpeed ZeRO-3 the full weights are gathered first (every rank takes part, rank 0
writes). The directory loads with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer``.
A LoRA policy (``model.lora``) writes its adapter there instead, and with ``merged: true`` also the
merged model into ``<dirpath>/merged``.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import Callback

from lit_reason.models.export import policy_state_dict, save_lora_policy, save_merged_policy, save_policy
from lit_reason.models.lora import is_lora_policy


class PolicyExport(Callback):
    """Args:
    dirpath: output directory (default: ``<default_root_dir>/policy``).
    dtype: cast the saved weights (``bfloat16`` ...); None keeps the training dtype.
    merged: LoRA runs: also write the base with the adapter merged in (``<dirpath>/merged``);
        no effect without LoRA (the export is the whole model anyway).
    """

    def __init__(self, dirpath: str | None = None, dtype: str | None = None, merged: bool = False) -> None:
        self.dirpath, self.dtype, self.merged = dirpath, dtype, merged
        self.saved_to: str | None = None

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        full = trainer.strategy.lightning_module_state_dict()  # collective under sharded strategies
        full = _gathered(full, trainer.is_global_zero)
        if trainer.is_global_zero:
            out = self.dirpath or os.path.join(trainer.default_root_dir, "policy")
            weights = {k: v.detach().cpu() for k, v in policy_state_dict(full).items()}
            if is_lora_policy(pl_module.policy):
                self.saved_to = save_lora_policy(pl_module.policy, pl_module.tokenizer, out, state_dict=weights,
                                                 dtype=self.dtype)
                if self.merged:
                    h = pl_module.hparams
                    save_merged_policy(h.model, h.dtype, pl_module.lora, weights, pl_module.tokenizer, out, self.dtype)
            else:
                self.saved_to = save_policy(pl_module.policy, pl_module.tokenizer, out, state_dict=weights,
                                            dtype=self.dtype)
        trainer.strategy.barrier("policy_export")


def _gathered(state: dict[str, Any], keep: bool) -> dict[str, Any]:
    """FSDP2 (ModelParallelStrategy's distributed state dict): each DTensor shard gathered, one
    tensor at a time (a collective every rank joins in the same order); kept on CPU where ``keep``."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, value in state.items():
        if isinstance(value, DTensor):
            value = value.full_tensor()
        if keep:
            out[name] = value.detach().cpu() if hasattr(value, "detach") else value
    return out
