"""FP4 block formats (NVFP4, MXFP4) as pure tensor math: encode to (grid values, scales) and decode.

Everything here is plain elementwise torch on float32, with no Python loops over blocks and no
data-dependent control flow, so the exact same functions run eagerly on CPU and under
``torch.compile`` on CUDA (see ``kernels.py``): the two paths share their numerics by construction.

Conventions (documented in docs/fp4.md):

* Blocks run along the **last** dimension. A last dimension that is not a multiple of the block
  size ends in a shorter block (padded with zeros internally; zeros never change a block's amax).
* Non-finite elements (inf, NaN) are excluded from every amax and passed through unchanged, so
  one overflow stays visible downstream (anomaly detection, skipped steps) without wiping the
  finite values of its block.
* A block whose amax is 0 (or whose scale underflows to 0, as NVFP4 E4M3 block scales can for
  blocks far below the tensor's amax) decodes to zeros.
* Scaled magnitudes above 6 saturate to 6 (possible for the OCP MX scale and, by one E4M3
  rounding step, for NVFP4) -- for **nearest** rounding only. Stochastically rounded operands
  always get the no-overflow scale (NVFP4: the E4M3 block scale rounded *up*; MXFP4: the power
  of two with amax / scale <= 6, as in the FP4-all-the-way code), so no element is ever clipped
  and E[SR(x)] = x holds for every element, the block maximum included.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

E2M1_MAX = 6.0
E4M3_MAX = 448.0
E8M0_MIN_EXP, E8M0_MAX_EXP = -127, 127
FORMATS = {"nvfp4": 16, "mxfp4": 32}  # name -> block size
ROUNDINGS = ("nearest", "stochastic")
MX_SCALES = ("ocp", "no_overflow")


class FP4Blocks(NamedTuple):
    """An encoded tensor: ``values * block_scales`` (broadcast per block) is the dequantized tensor.

    values: [..., n_blocks, block] on the E2M1 grid (+-{0, .5, 1, 1.5, 2, 3, 4, 6}); non-finite
        inputs kept as they were. block_scales: [..., n_blocks, 1] float32 decoded scale of each
        block (NVFP4: E4M3 block scale times the per-tensor scale; MXFP4: a power of two).
        tensor_scale: 0-d float32 (NVFP4 per-tensor scale; 1 for MXFP4).
    """

    values: Tensor
    block_scales: Tensor
    tensor_scale: Tensor


def check_args(fmt: str, rounding: str, mx_scale: str = "ocp") -> None:
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is not an FP4 format; use one of {sorted(FORMATS)}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r} is unknown; use one of {ROUNDINGS}")
    if mx_scale not in MX_SCALES:
        raise ValueError(f"mx_scale={mx_scale!r} is unknown; use one of {MX_SCALES}")


def _exponent(x: Tensor) -> Tensor:
    """floor(log2(x)) for positive normal float32 x, read exactly from the exponent bits.

    Subnormals (and zero) read as -127, which every caller clamps away."""
    return ((x.contiguous().view(torch.int32) >> 23) & 0xFF) - 127


def _pow2(k: Tensor) -> Tensor:
    """2**k as float32, exactly, for integer k in [-149, 127] (normal and subnormal range)."""
    normal = ((k + 127).clamp(min=1) << 23).view(torch.float32)
    subnormal = (torch.ones_like(k) << (k + 149).clamp(min=0, max=22)).view(torch.float32)
    return torch.where(k >= -126, normal, subnormal)


def true_divide(x: Tensor, divisor: float) -> Tensor:
    """x / divisor rounded once (IEEE), as the Triton kernel's ``div_rn`` does, on every device.

    CUDA divides a tensor by a Python number (or a CPU scalar tensor) as a multiplication by its
    reciprocal, which rounds twice: emulated on CPU for the NVFP4 scales (÷ 2688, ÷ 6), that changes
    61 % of the elements (75 % of the blocks) of a 4096² N(0, 3²) tensor by an ulp against the
    kernel. A divisor tensor on x's device is divided truly on every device."""
    return x / torch.full((), divisor, dtype=x.dtype, device=x.device)


def round_e4m3(v: Tensor, up: bool = False) -> Tensor:
    """Round non-negative float32 to FP8 E4M3 (fn), saturating at 448: to nearest (ties to even),
    or ``up`` to the smallest E4M3 value >= v (the no-overflow block scale)."""
    v = v.clamp(max=E4M3_MAX)
    step = _pow2(_exponent(v).clamp(min=-6) - 3)  # 3 mantissa bits; subnormal step 2**-9
    r = torch.ceil(v / step) if up else torch.round(v / step)
    return (r * step).clamp(max=E4M3_MAX)


def _e2m1_step(a: Tensor) -> Tensor:
    """Spacing of the E2M1 grid at float32 magnitude a in [0, 6]: 0.5 below 2, 1 below 4, else 2.

    Read from the exponent bits (biased exponent clamped to 127..129 i.e. 2**0..2**2, then
    halved): four cheap integer ops instead of comparisons and selects."""
    biased = (a.view(torch.int32) >> 23).clamp(127, 129)
    return ((biased - 1) << 23).view(torch.float32)


def round_e2m1_magnitude(a: Tensor, noise: Tensor | None = None) -> Tensor:
    """Round magnitudes a >= 0 to the E2M1 grid {0, .5, 1, 1.5, 2, 3, 4, 6}, saturating at 6.

    noise=None: nearest, ties to even (torch.round is round-half-to-even, and an even multiple
    of the local step is exactly a grid point with a zero mantissa bit).
    noise=U[0,1) of a's shape: stochastic; round up with probability equal to the fractional
    distance to the lower neighbour, so E[result] = a for a <= 6 and only the two neighbouring
    grid points can come out.
    """
    a = a.clamp(max=E2M1_MAX).contiguous()
    step = _e2m1_step(a)
    if noise is None:
        return torch.round(a / step) * step
    low = torch.floor(a / step)
    return (low + ((a / step - low) > noise).to(a.dtype)) * step


def round_e2m1(v: Tensor, noise: Tensor | None = None) -> Tensor:
    """Signed version of round_e2m1_magnitude (keeps signs, including -0)."""
    return torch.copysign(round_e2m1_magnitude(v.abs(), noise), v)


def _blocked(x: Tensor, block: int) -> Tensor:
    """[..., K] -> [..., ceil(K / block), block] float32, zero-padded at the end of the last dim."""
    k = x.shape[-1]
    pad = (-k) % block
    xf = x.float()
    if pad:
        xf = torch.nn.functional.pad(xf, (0, pad))
    return xf.reshape(*x.shape[:-1], (k + pad) // block, block)


def nvfp4_scales(amax_block: Tensor, no_overflow: bool = False,
                 amax: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(decoded block scales [..., n, 1], per-tensor scale) from the block amaxes [..., n, 1].

    s_tensor = amax(tensor) / (6 * 448)          (float32; 1 when the tensor is all zero)
    s_block  = E4M3((amax(block) / 6) / s_tensor) (round to nearest even, saturating at 448;
               no_overflow: rounded up, so amax(block) / decoded <= 6 and nothing saturates)
    decoded  = s_block * s_tensor
    ``amax`` (the tensor's finite amax) may be passed when already known.
    """
    if amax is None:
        amax = amax_block.amax() if amax_block.numel() else amax_block.new_zeros(())
    s_tensor = true_divide(amax, E2M1_MAX * E4M3_MAX)
    s_tensor = torch.where(s_tensor > 0, s_tensor, torch.ones_like(s_tensor))
    s_block = round_e4m3(true_divide(amax_block, E2M1_MAX) / s_tensor, up=no_overflow)
    return s_block * s_tensor, s_tensor


def mxfp4_scales(amax: Tensor, mx_scale: str = "ocp") -> Tensor:
    """Decoded E8M0 (power-of-two) block scales [..., n, 1] from the block amaxes [..., n, 1].

    "ocp" (OCP MX v1.0): 2**(floor(log2(amax)) - 2); scaled magnitudes land in [4, 8) for the
        largest element, and the part above 6 saturates to 6.
    "no_overflow" (the FP4-all-the-way code): the smallest power of two with amax / scale <= 6,
        i.e. 1 / 2**floor(log2(6 / amax)); never saturates, uses the grid's top less often.
    Exponents are clamped to E8M0's [-127, 127]; all-zero blocks get scale 1.
    """
    exp = _exponent(amax) - 2
    if mx_scale == "no_overflow":
        exp = exp + (amax / _pow2(exp.clamp(E8M0_MIN_EXP, E8M0_MAX_EXP)) > E2M1_MAX).to(exp.dtype)
    exp = torch.where(amax > 0, exp, torch.zeros_like(exp))
    return _pow2(exp.clamp(E8M0_MIN_EXP, E8M0_MAX_EXP))


def encode(
    x: Tensor, fmt: str = "nvfp4", noise: Tensor | None = None, mx_scale: str = "ocp",
    no_overflow: bool | None = None,
) -> FP4Blocks:
    """Encode x along its last dimension. noise: None (nearest) or U[0,1) shaped like the blocks.

    no_overflow (default: True exactly when noise is given, i.e. for stochastic rounding) picks
    the scales that never saturate: NVFP4 rounds its E4M3 block scale up, MXFP4 uses the
    "no_overflow" power of two whatever ``mx_scale`` says."""
    if no_overflow is None:
        no_overflow = noise is not None
    blocks = _blocked(x, FORMATS[fmt])
    mag = blocks.abs()
    amax = torch.nan_to_num(mag, nan=0.0, posinf=0.0).amax(dim=-1, keepdim=True)
    if fmt == "nvfp4":
        scales, s_tensor = nvfp4_scales(amax, no_overflow)
    else:
        rule = "no_overflow" if no_overflow else mx_scale
        scales, s_tensor = mxfp4_scales(amax, rule), blocks.new_ones(())
    # a zero scale (NVFP4 block underflow) divides by inf: the block's finite values flush to 0
    divisor = torch.where(scales > 0, scales, float("inf"))
    values = torch.copysign(round_e2m1_magnitude(mag / divisor, noise), blocks)
    values = torch.where(mag < float("inf"), values, blocks)  # inf/NaN pass through
    return FP4Blocks(values, scales, s_tensor)


def decode(enc: FP4Blocks, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """values * block scales, unpadded back to ``shape`` and cast to ``dtype``."""
    # where the scale is 0 the finite values are already +-0; inf/NaN must not meet 0 * inf
    out = torch.where(enc.block_scales > 0, enc.values * enc.block_scales, enc.values)
    out = out.reshape(*shape[:-1], -1)[..., : shape[-1]]
    return out.to(dtype)


def fake_quantize(
    x: Tensor, fmt: str, noise: Tensor | None = None, mx_scale: str = "ocp"
) -> Tensor:
    """decode(encode(x)): one fused-able function, the body that kernels.py compiles for CUDA."""
    return decode(encode(x, fmt, noise, mx_scale), x.shape, x.dtype)
