"""Global RNG states (torch, CUDA, numpy, random) as checkpoint-safe values.

Checkpoints are loaded with ``torch.load(weights_only=True)``, which refuses numpy arrays; the
states here are tensors, ints and tuples only, so a resumed run can restore them (GRPO saves them
in ``on_save_checkpoint``; the rollout generator itself is re-seeded from the global step).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def collect_rng_states() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`collect_rng_states` returned (CUDA states only on a like-for-like machine)."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = states.get("torch.cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def rollout_seed(base: int, step: int, rank: int, salt: int = 0) -> int:
    """The seed of one rollout's sampling generator: a pure function of (seed, optimizer step, rank,
    salt), so a resumed run, and a sampler in another process told the step, draw the same."""
    # a tuple of ints hashes the same in every process (a str in it would not: PYTHONHASHSEED)
    return hash((int(base), int(step), int(rank), int(salt))) % (2**63)
