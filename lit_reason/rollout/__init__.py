"""Rollout engines behind one contract (``contract.py``): the built-in KV-cache engine, the
static-cache CUDA engine, HRPO's latent-mixing engine and colocated vLLM (``vllm_engine.py``,
weights from ``weight_sync.py``); ``correction.py`` corrects sampler/trainer mismatch for any of them."""

from lit_reason.rollout.contract import Rollout, SamplingConfig, positions_from_mask
from lit_reason.rollout.kv_cache import RolloutEngine, cache_argument, filter_logits, output_cache
from lit_reason.rollout.latent import GATE, LATENTS, MIX, SHARE, DelimiterTracker, HybridRolloutEngine
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine
from lit_reason.rollout.correction import RolloutCorrection, correct_rollout
from lit_reason.rollout.vllm_engine import VLLMOptions, VLLMRolloutEngine, VLLMSession

__all__ = [
    "GATE", "LATENTS", "MIX", "SHARE", "DelimiterTracker", "HybridRolloutEngine", "Rollout", "RolloutEngine",
    "SamplingConfig", "StaticCacheRolloutEngine", "cache_argument", "filter_logits", "output_cache",
    "positions_from_mask", "RolloutCorrection", "correct_rollout", "VLLMOptions", "VLLMRolloutEngine", "VLLMSession",
]
