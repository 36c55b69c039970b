"""The GRPO family of LightningModules (short names usable in YAML: ``model: GRPO``)."""

from lit_reason.modules.grpo import GRPO
from lit_reason.modules.hrpo import HRPO
from lit_reason.modules.intuitor import Intuitor
from lit_reason.modules.nthr import NTHR
from lit_reason.modules.sft import SFT

__all__ = ["GRPO", "NTHR", "HRPO", "Intuitor", "SFT"]
