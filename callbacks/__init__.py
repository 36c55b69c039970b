"""Lightning callbacks: analysis (measure) and control (change training). Short names work in YAML."""

from callbacks.difficulty_curriculum import DifficultyCurriculum
from callbacks.lld_monitor import LLDMonitor
from callbacks.quantization_noise import QuantizationNoiseMonitor

__all__ = ["DifficultyCurriculum", "LLDMonitor", "QuantizationNoiseMonitor"]
