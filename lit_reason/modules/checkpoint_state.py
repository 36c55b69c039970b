"""What a GRPO-family checkpoint carries beyond the weights and optimizer state: the global RNG
states, the token counter and the rollout step's own state (dynamic sampling's totals), so a
resumed run draws what the uninterrupted one would have; and LoRA's slim checkpoints, which keep
only the adapters of a pretrained base and get the base back on load."""

from __future__ import annotations

from typing import Any

from lit_reason.models.lora_checkpoint import can_slim, restore_base, slim_checkpoint, trained_keys
from lit_reason.modules.resume_config import check_resume
from lit_reason.utils.rng import collect_rng_states, set_rng_states


class CheckpointState:
    """Lightning's checkpoint hooks for a module with ``lora``, ``rollout_step``, ``divergence`` and ``total_tokens``."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The rollout generator is re-seeded from the step anyway; the global RNG states cover the rest."""
        checkpoint["lit_reason"] = {"rng_states": collect_rng_states(), "total_tokens": self.total_tokens,
                                    **self.rollout_step.state_dict(), **self.divergence.state_dict()}
        if self.lora is not None and "state_dict" in checkpoint and self._trainer is not None and \
                can_slim(self.hparams.model, self.trainer.strategy, self.lora.save_base):
            slim_checkpoint(checkpoint, trained_keys(self), self.hparams.model)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:  # a LoRA checkpoint without its base gets the live one back
            restore_base(checkpoint, self.state_dict(), self.hparams.model)
        check_resume(self, checkpoint)  # another class, model or LoRA shape stops; other changes are listed
        state = checkpoint.get("lit_reason") or {}
        if "rng_states" in state:
            set_rng_states(state["rng_states"])
        self.rollout_step.load_state_dict(state)
        self.divergence.load_state_dict(state)
        self.total_tokens = int(state.get("total_tokens", self.total_tokens))
