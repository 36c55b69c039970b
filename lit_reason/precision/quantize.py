"""Public fake-quantization entry point: ``quantize(x, fmt, rounding, generator, mx_scale, seed)``."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_reason.precision import formats, kernels
from lit_reason.precision.noise import seeded_generator


def quantize(
    x: Tensor,
    fmt: str = "nvfp4",
    rounding: str = "nearest",
    generator: torch.Generator | None = None,
    mx_scale: str = "ocp",
    seed: int | None = None,
) -> Tensor:
    """Fake-quantize x to FP4 along its last dimension: same shape and dtype, values on the
    E2M1 grid times their block scale.

    fmt: "nvfp4" (blocks of 16, E4M3 block scales, FP32 per-tensor scale) or "mxfp4" (blocks
        of 32, E8M0 power-of-two scales; ``mx_scale`` "ocp" (default, OCP MX spec: 2**(floor(
        log2 amax) - 2), saturating) or "no_overflow" (2**ceil(log2(amax / 6)))).
    rounding: "nearest" (ties to even) or "stochastic" (unbiased, with the no-overflow scales
        of ``formats.encode``, whatever ``mx_scale`` says). The uniforms come from ``seed``
        (an int: a reseeded private generator, or the Triton kernel's Philox stream), else from
        ``generator``, else from the global RNG of x's device.
    Zeros and all-zero blocks stay zero; inf/NaN pass through untouched and are ignored by the
    scales; a last dimension not divisible by the block size ends in a shorter block; 0-d
    tensors are treated as one element. Computed in float32, cast back to x.dtype (exact for
    MXFP4; NVFP4's scale product is rounded once when x is bf16/fp16).
    """
    formats.check_args(fmt, rounding, mx_scale)
    if not x.is_floating_point():
        raise TypeError(f"quantize needs a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        return x.clone()
    flat = x.reshape(1) if x.dim() == 0 else x
    stochastic = rounding == "stochastic"
    if kernels.backend_name(x.device) == "triton":
        if stochastic and seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device="cpu"
                                     if generator is None else generator.device).item())
        return kernels.triton_fake_quantize(flat, fmt, stochastic, seed or 0, mx_scale).reshape(x.shape)
    noise = None
    if stochastic:
        block = formats.FORMATS[fmt]
        n_blocks = -(-flat.shape[-1] // block)
        if seed is not None:
            generator = seeded_generator(x.device, seed)
        noise = torch.rand(
            (*flat.shape[:-1], n_blocks, block), generator=generator, device=x.device, dtype=torch.float32
        )
    out = kernels.fake_quantize_fn(x.device)(flat, fmt, noise, mx_scale)
    return out.reshape(x.shape)
