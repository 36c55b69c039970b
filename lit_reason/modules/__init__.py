"""The GRPO family of LightningModules (short names usable in YAML: ``model: GRPO``)."""

from lit_reason.modules.grpo import GRPO

__all__ = ["GRPO"]
