"""Fused FP4 fake-quantize in Triton: one kernel per operand, uniforms drawn in the kernel.

Imported lazily (only by ``kernels.py`` when the Triton backend is chosen), so CPU users never
import Triton. The kernel is a line-by-line transcription of ``formats.fake_quantize`` into one
pass: load a [BLOCK_R, block] tile of a 2-D view (any strides, so a transposed operand is
quantized along its other axis without a copy), block amax of the finite magnitudes, the block
scale (NVFP4 E4M3 x FP32 tensor scale, or MXFP4 E8M0), E2M1 rounding (nearest-even, or
stochastic against ``tl.rand(seed, index)``), dequantize, store in the input dtype. NVFP4 needs
the tensor amax first: one extra reduction kernel (``_amax_kernel``).

Bit-exactness with the torch reference (tested on CPU under ``TRITON_INTERPRET=1``): all
divisions are IEEE round-to-nearest (``div_rn``), power-of-two scales are built from exponent
bits, and round-half-even is the exact ``(v + 1.5 * 2**23) - 1.5 * 2**23`` (valid for
|v| < 2**22; every value rounded here is below 16). ``uniforms(seed, rows, cols)`` writes the
kernel's random numbers into a tensor, so the torch path can be fed the same bits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_RINT_MAGIC = 12582912.0  # 1.5 * 2**23
BLOCK_R = 64


@triton.jit
def _exponent(x):
    return ((x.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127


@triton.jit
def _pow2(k):
    normal = (tl.maximum(k + 127, 1) << 23).to(tl.float32, bitcast=True)
    sub = (tl.full(k.shape, 1, tl.int32) << tl.minimum(tl.maximum(k + 149, 0), 22)).to(tl.float32, bitcast=True)
    return tl.where(k >= -126, normal, sub)


@triton.jit
def _rint(v):
    return (v + 12582912.0) - 12582912.0


@triton.jit
def _amax_kernel(x_ptr, amax_ptr, R, C, sr, sc, BR: tl.constexpr, BC: tl.constexpr):
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    mask = (rows[:, None] < R) & (cols[None, :] < C)
    x = tl.load(x_ptr + rows[:, None] * sr + cols[None, :] * sc, mask=mask, other=0.0).to(tl.float32)
    mag = tl.abs(x)
    mag = tl.where(mag < float("inf"), mag, 0.0)
    tl.atomic_max(amax_ptr, tl.max(tl.max(mag, axis=1), axis=0))


@triton.jit
def _fake_quantize_kernel(
    x_ptr, out_ptr, amax_ptr, seed, R, C, C_pad, sxr, sxc, sor, soc,
    BS: tl.constexpr, BR: tl.constexpr, NVFP4: tl.constexpr, STOCHASTIC: tl.constexpr,
    NO_OVERFLOW: tl.constexpr, BF16_OUT: tl.constexpr,
):
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    cols = tl.program_id(1) * BS + tl.arange(0, BS)
    inside = (rows[:, None] < R) & (cols[None, :] < C)
    x = tl.load(x_ptr + rows[:, None] * sxr + cols[None, :] * sxc, mask=inside, other=0.0).to(tl.float32)
    mag = tl.abs(x)
    finite = mag < float("inf")
    amax = tl.max(tl.where(finite, mag, 0.0), axis=1)[:, None]  # [BR, 1]
    if NVFP4:
        s_t = tl.math.div_rn(tl.load(amax_ptr), 2688.0)
        s_t = tl.where(s_t > 0, s_t, 1.0)
        v = tl.minimum(tl.math.div_rn(tl.math.div_rn(amax, 6.0), s_t), 448.0)
        step = _pow2(tl.maximum(_exponent(v), -6) - 3)
        r = tl.math.div_rn(v, step)
        if NO_OVERFLOW:
            r = tl.math.ceil(r)
        else:
            r = _rint(r)
        scale = tl.minimum(r * step, 448.0) * s_t
    else:
        e = _exponent(amax) - 2
        if NO_OVERFLOW:
            over = tl.math.div_rn(amax, _pow2(tl.minimum(tl.maximum(e, -127), 127))) > 6.0
            e = e + over.to(tl.int32)
        e = tl.where(amax > 0, e, 0)
        scale = _pow2(tl.minimum(tl.maximum(e, -127), 127))
    a = tl.minimum(tl.math.div_rn(mag, tl.where(scale > 0, scale, float("inf"))), 6.0)
    biased = tl.minimum(tl.maximum(a.to(tl.int32, bitcast=True) >> 23, 127), 129)
    gstep = ((biased - 1) << 23).to(tl.float32, bitcast=True)
    t = tl.math.div_rn(a, gstep)
    if STOCHASTIC:
        u = tl.rand(seed, rows[:, None] * C_pad + cols[None, :])
        low = tl.math.floor(t)
        q = (low + ((t - low) > u).to(tl.float32)) * gstep
    else:
        q = _rint(t) * gstep
    signed = ((q.to(tl.int32, bitcast=True) & 0x7FFFFFFF) | (x.to(tl.int32, bitcast=True) & -2147483648)).to(
        tl.float32, bitcast=True)
    out = tl.where(scale > 0, signed * scale, signed)
    out = tl.where(finite, out, x)
    if BF16_OUT:  # round to bf16 nearest-even by hand (the interpreter's cast truncates)
        bits = out.to(tl.int32, bitcast=True)
        rne = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
        out = tl.where((bits & 0x7FFFFFFF) > 0x7F800000, out, rne.to(tl.float32, bitcast=True))  # NaN kept
    tl.store(out_ptr + rows[:, None] * sor + cols[None, :] * soc, out.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _uniforms_kernel(out_ptr, seed, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.rand(seed, offs), mask=offs < n)


def fake_quantize_2d(x: torch.Tensor, block: int, nvfp4: bool, stochastic: bool, no_overflow: bool,
                     seed: int = 0) -> torch.Tensor:
    """Fake-quantize a 2-D view (any strides) along its last dimension in one fused kernel."""
    R, C = x.shape
    out = torch.empty_like(x)  # same strides as x: a transposed view stays transposed
    amax = torch.zeros(1, device=x.device, dtype=torch.float32)
    if nvfp4:
        _amax_kernel[(triton.cdiv(R, BLOCK_R), triton.cdiv(C, 64))](
            x, amax, R, C, x.stride(0), x.stride(1), BR=BLOCK_R, BC=64)
    c_pad = triton.cdiv(C, block) * block
    _fake_quantize_kernel[(triton.cdiv(R, BLOCK_R), triton.cdiv(C, block))](
        x, out, amax, seed, R, C, c_pad, x.stride(0), x.stride(1), out.stride(0), out.stride(1),
        BS=block, BR=BLOCK_R, NVFP4=nvfp4, STOCHASTIC=stochastic, NO_OVERFLOW=no_overflow,
        BF16_OUT=x.dtype == torch.bfloat16)
    return out


def uniforms(seed: int, rows: int, cols_padded: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The kernel's uniforms for ``seed`` as a [rows, cols_padded] float32 tensor."""
    n = rows * cols_padded
    out = torch.empty(n, device=device, dtype=torch.float32)
    _uniforms_kernel[(triton.cdiv(n, 1024),)](out, seed, n, BLOCK=1024)
    return out.reshape(rows, cols_padded)
