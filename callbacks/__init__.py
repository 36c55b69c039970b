"""Lightning callbacks: analysis (measure) and control (change training). Short names work in YAML."""

from callbacks.batch_lld import BatchLLDMonitor
from callbacks.difficulty_curriculum import DifficultyCurriculum
from callbacks.gate_monitor import GateMonitor
from callbacks.lld_monitor import LLDMonitor
from callbacks.policy_export import PolicyExport
from callbacks.preemption import PreemptionCheckpoint
from callbacks.quantization_noise import QuantizationNoiseMonitor
from callbacks.self_certainty_monitor import SelfCertaintyMonitor

__all__ = ["BatchLLDMonitor", "DifficultyCurriculum", "GateMonitor", "LLDMonitor", "PolicyExport", "PreemptionCheckpoint", "QuantizationNoiseMonitor", "SelfCertaintyMonitor"]
