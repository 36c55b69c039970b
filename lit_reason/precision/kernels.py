"""Device dispatch for the fake-quantize body: eager torch on CPU, torch.compile'd on CUDA.

The CUDA path compiles *the same* ``formats.fake_quantize`` function, so it has no numerics of
its own to get wrong: Inductor fuses the amax reductions, the scale math, the rounding and the
dequantize into a few Triton kernels instead of ~20 full-size eager passes. The compiled
function is created lazily on the first CUDA call, so nothing imports Triton on CPU.

UNTESTED ON GPU in this repository's CI (no GPU there): the CPU test-suite runs the compiled
function on CPU (Inductor's C++ backend) against the eager one where a compiler is available.
Set ``LIT_REASON_FP4_COMPILE=0`` to force the eager path everywhere (e.g. to bisect a mismatch).
Stochastic rounding draws its uniforms with ``torch.rand`` outside the compiled region, so a
user-supplied ``torch.Generator`` is honoured; this costs one transient float32 tensor.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from lit_reason.precision import formats

_compiled: Callable | None = None


def compile_enabled() -> bool:
    return os.environ.get("LIT_REASON_FP4_COMPILE", "1") != "0"


def compiled_fake_quantize() -> Callable:
    """The torch.compile'd fake_quantize, built once (dynamic shapes: one kernel per format)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(formats.fake_quantize, dynamic=True, fullgraph=True)
    return _compiled


def fake_quantize_fn(device: torch.device) -> Callable:
    """The implementation for tensors on ``device``."""
    if device.type == "cuda" and compile_enabled():
        return compiled_fake_quantize()
    return formats.fake_quantize
