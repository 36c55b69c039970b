"""Rounding noise of its own: one seed per (seed, rank, step, layer, call), never the global RNG.

Stochastic rounding needs uniforms. Drawing them from torch's global RNG would shift every other
random stream (sampling, dropout) and, after ``seed_everything``, give every DDP rank the *same*
noise, so rank averaging would not reduce it. Instead every stochastic quantize call gets an
integer seed mixed (SplitMix64) from the run seed, the rank, the optimizer step, the layer's
index and a per-step call counter. The seed feeds either a reseeded ``torch.Generator`` (eager
path) or the Triton kernel's in-kernel Philox ``tl.rand`` (fused path): reproducible per run,
independent across ranks, layers and steps, and nothing global is touched.
"""

from __future__ import annotations

import torch

_MASK = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def mix_seed(*parts: int) -> int:
    """A well-mixed non-negative 62-bit seed from integer parts (order matters)."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK))
    return h >> 2


def current_rank() -> int:
    """The global rank when torch.distributed is initialised, else 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class NoiseStream:
    """Seeds for one layer: call i of optimizer step s on rank r -> mix(seed, r, s, layer, i).

    ``step`` is read from the shared settings at each call, so the plugin advancing its step
    counter after each optimizer step resets the per-step call counter."""

    def __init__(self, layer: int) -> None:
        self.layer = layer
        self._step: int | None = None
        self._calls = 0

    def next_seed(self, seed: int, step: int) -> int:
        if step != self._step:
            self._step, self._calls = step, 0
        self._calls += 1
        return mix_seed(seed, current_rank(), step, self.layer, self._calls - 1)


_generators: dict[torch.device, torch.Generator] = {}


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    """A per-device private generator, reseeded: the eager path's source of uniforms."""
    gen = _generators.get(device)
    if gen is None:
        gen = _generators[device] = torch.Generator(device=device)
    return gen.manual_seed(seed)
