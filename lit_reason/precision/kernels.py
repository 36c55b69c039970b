"""Backend dispatch of the fake-quantize body: eager torch, torch.compile, or the fused Triton kernel.

``LIT_REASON_FP4_BACKEND`` picks it: ``auto`` (default: Triton on CUDA when it imports, eager
elsewhere), ``triton``, ``compile`` or ``eager``. ``triton`` also runs on CPU tensors under
``TRITON_INTERPRET=1`` (slow; that is how the CPU tests check it bit for bit against eager).

* eager: ``formats.fake_quantize``, ~15 elementwise passes; uniforms from a reseeded private
  ``torch.Generator``.
* triton: ``triton_kernels.fake_quantize_2d``, one fused kernel per operand (plus one amax
  reduction for NVFP4), uniforms drawn inside the kernel from the same integer seed.
* compile: ``torch.compile(formats.fake_quantize)``. One compiled function per
  (fmt, rounding, mx_scale, dtype) variant, each ``dynamic=True``, so only shapes vary inside
  one and Dynamo's recompile limit (8) is never the reason for a silent fallback to eager;
  ``fullgraph=True`` makes a graph break an error rather than a slowdown. Divisions round as in
  eager where inductor allows it (:func:`eager_division_options`); not bit-exact on GPU.

UNTESTED ON GPU in this repository's CI: ``benchmarks/fp4.py:gpu_checks`` checks the Triton
and compiled paths against eager on a CUDA device.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch

from lit_reason.precision import formats

BACKENDS = ("auto", "eager", "compile", "triton")


def backend_name(device: torch.device) -> str:
    """The backend used for tensors on ``device``."""
    name = os.environ.get("LIT_REASON_FP4_BACKEND", "auto")
    if os.environ.get("LIT_REASON_FP4_COMPILE") == "0":  # older switch: force eager
        name = "eager"
    if name not in BACKENDS:
        raise ValueError(f"LIT_REASON_FP4_BACKEND={name!r}: use one of {BACKENDS}")
    if name == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "eager"
    if name == "compile" and device.type != "cuda":
        return "eager"
    return name


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def compiled_variant(fmt: str, noisy: bool, mx_scale: str, dtype: torch.dtype) -> Callable:
    """A torch.compile'd fake_quantize for one variant (its own Dynamo cache)."""

    def body(x, noise):
        return formats.fake_quantize(x, fmt, noise if noisy else None, mx_scale)

    body.__name__ = f"fp4_{fmt}_{'sr' if noisy else 'rn'}_{mx_scale}_{str(dtype).split('.')[-1]}"
    return torch.compile(body, dynamic=True, fullgraph=True, options=eager_division_options())


def eager_division_options() -> dict:
    """Inductor options that make a compiled ``x / y`` round like eager (Triton's ``div_rn``)
    instead of the approximate ``div.full``, where this torch has the switch. Inductor still turns
    a division by a constant into a multiplication by its reciprocal on GPU, so the compiled path
    is checked against eager with a tolerance (``benchmarks/gpu_check_support.py:fp4_mismatches``)."""
    from torch._inductor import config

    numerics = getattr(config, "eager_numerics", None)
    return {"eager_numerics.division_rounding": True} if hasattr(numerics, "division_rounding") else {}


def compiled_fake_quantize() -> Callable:
    """fake_quantize(x, fmt, noise, mx_scale) through the per-variant compiled functions."""

    def run(x, fmt, noise, mx_scale="ocp"):
        return compiled_variant(fmt, noise is not None, mx_scale, x.dtype)(x, noise)

    return run


def fake_quantize_fn(device: torch.device) -> Callable:
    """The noise-tensor implementation (eager or compiled) for tensors on ``device``."""
    if device.type == "cuda" and backend_name(device) == "compile":
        return compiled_fake_quantize()
    return formats.fake_quantize


def triton_fake_quantize(x: torch.Tensor, fmt: str, stochastic: bool, seed: int, mx_scale: str) -> torch.Tensor:
    """The fused kernel on x viewed as 2-D [prod(leading), last] (no copy for 2-D views)."""
    from lit_reason.precision import triton_kernels

    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    no_overflow = stochastic or (fmt == "mxfp4" and mx_scale == "no_overflow")
    out = triton_kernels.fake_quantize_2d(x2, formats.FORMATS[fmt], fmt == "nvfp4", stochastic, no_overflow, seed)
    return out.reshape(x.shape)
