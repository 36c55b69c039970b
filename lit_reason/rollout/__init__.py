"""Rollout engines behind one contract (``contract.py``): the built-in KV-cache engine, the
static-cache CUDA engine and HRPO's latent-mixing engine."""

from lit_reason.rollout.contract import Rollout, SamplingConfig, positions_from_mask
from lit_reason.rollout.kv_cache import RolloutEngine, cache_argument, filter_logits, output_cache
from lit_reason.rollout.latent import GATE, LATENTS, MIX, SHARE, DelimiterTracker, HybridRolloutEngine
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine

__all__ = [
    "GATE", "LATENTS", "MIX", "SHARE", "DelimiterTracker", "HybridRolloutEngine", "Rollout", "RolloutEngine",
    "SamplingConfig", "StaticCacheRolloutEngine", "cache_argument", "filter_logits", "output_cache",
    "positions_from_mask",
]
