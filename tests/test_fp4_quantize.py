"""NVFP4 / MXFP4 fake quantization: grid, scales, rounding and edge cases against references."""

import math
import os

import ml_dtypes
import numpy as np
import pytest
import torch

from lit_reason.precision import FORMATS, encode, quantize
from lit_reason.precision.formats import fake_quantize, round_e4m3

GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
SIGNED_GRID = torch.cat([-GRID, GRID])


def e2m1_reference(v: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(v.numpy().astype(ml_dtypes.float4_e2m1fn).astype(np.float32))


def on_grid(v: torch.Tensor) -> torch.Tensor:
    return (v.reshape(-1, 1) == SIGNED_GRID).any(dim=1)


def dense_sweep() -> torch.Tensor:
    """Every multiple of 1/64 in (-8, 8) (all grid points and all ties) plus random values."""
    ticks = torch.arange(-511, 512, dtype=torch.float32) / 64
    rand = (torch.rand(4096, generator=torch.Generator().manual_seed(0)) * 16 - 8).clamp(-7.99, 7.99)
    return torch.cat([ticks, rand])


def test_e2m1_nearest_matches_ml_dtypes_on_dense_sweep():
    v = dense_sweep()
    # MXFP4 OCP: a block containing 4.0 and nothing >= 8 has scale 2**(2-2) = 1, so quantize()
    # must equal the plain float4_e2m1fn cast (ties to even, saturating at 6).
    n_blocks = -(-v.numel() // 31)
    padded = torch.nn.functional.pad(v, (0, n_blocks * 31 - v.numel())).reshape(n_blocks, 31)
    x = torch.cat([torch.full((n_blocks, 1), 4.0), padded], dim=1)
    q = quantize(x, "mxfp4", "nearest")
    assert torch.equal(q, e2m1_reference(x))
    # spot checks of ties to even written out by hand
    ties = torch.tensor([[4.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.0, 7.0, -0.1]])
    assert quantize(ties, "mxfp4").tolist() == [[4.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -4.0, 6.0, -0.0]]


def test_e4m3_rounding_matches_ml_dtypes():
    ticks = torch.arange(0, 449 * 32, dtype=torch.float32) / 32  # includes ties at every scale
    tiny = torch.arange(0, 1025, dtype=torch.float32) * 2.0**-14  # subnormal range and its ties
    v = torch.cat([ticks, tiny])
    ref = torch.from_numpy(v.numpy().astype(ml_dtypes.float8_e4m3fn).astype(np.float32))
    assert torch.equal(round_e4m3(v), ref)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_outputs_are_grid_times_block_scale(fmt, rounding):
    block = {"nvfp4": 16, "mxfp4": 32}[fmt]
    # rows spanning 6 decades: NVFP4 E4M3 block scales of the smallest rows underflow to 0
    x = torch.randn(6, 96, generator=torch.Generator().manual_seed(1)) * torch.logspace(-3, 3, 6).reshape(6, 1)
    q = quantize(x, fmt, rounding, generator=torch.Generator().manual_seed(2))
    sr = rounding == "stochastic"
    enc = encode(x, fmt, no_overflow=sr)  # stochastic rounding uses the no-overflow scales
    assert on_grid(enc.values).all()
    scales = enc.block_scales.expand(-1, -1, block).reshape(6, 96)
    live = scales > 0
    # NVFP4 values need up to 2 + 4 + 24 significant bits, so in fp32 they are grid x scale
    # rounded once: the ratio lies within one part in 2**22 of a grid point.
    ratio = (q[live].double() / scales[live].double()).reshape(-1, 1)
    assert ((ratio - SIGNED_GRID.double()).abs().min(1).values <= 2.0**-22 * ratio.abs().flatten()).all()
    if fmt == "mxfp4":  # power-of-two scales: exact
        assert on_grid(q[live] / scales[live]).all()
    assert (q[~live] == 0).all()
    if fmt == "nvfp4" and not sr:
        assert (~live).any()  # the flush-to-zero case really occurs here
        assert enc.values.abs().amax().item() == 6.0  # the tensor's amax block uses the top of the grid
    if sr:
        assert live.all()  # E4M3 scales rounded up never underflow to 0
    assert q.shape == x.shape and q.dtype == x.dtype
    if not sr:  # decode(encode(x)) is what quantize returns
        assert torch.equal(quantize(x, fmt), enc.values.reshape(6, 96) * scales)


def test_nvfp4_scales_follow_the_formula():
    # tensor amax 2688 = 6 * 448 -> s_tensor = 1; block amax 12 -> s_block = 2 (exact in E4M3);
    # block amax 13 -> 13/6 = 2.1667 -> E4M3 (step 0.25 in [2, 4)) -> 2.25
    x = torch.zeros(3, 16)
    x[0, 0], x[1, 3], x[2, 5] = 2688.0, -12.0, 13.0
    enc = encode(x, "nvfp4")
    assert enc.tensor_scale.item() == 1.0
    assert enc.block_scales.flatten().tolist() == [448.0, 2.0, 2.25]
    # 13 / 2.25 = 5.78 -> rounds to 6: decoded 13.5
    assert quantize(x, "nvfp4")[2, 5].item() == 13.5
    # independent reference on random data: numpy float64 formula + ml_dtypes E4M3 cast
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(3)) * 5
    enc = encode(x, "nvfp4")
    amax_t = np.float32(x.abs().max().item())
    s_t = np.float32(amax_t / np.float32(6 * 448))
    amax_b = x.reshape(8, 4, 16).abs().amax(-1).numpy().astype(np.float32)
    s_b = ((amax_b / np.float32(6)) / s_t).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert enc.tensor_scale.item() == s_t
    assert np.array_equal(enc.block_scales.squeeze(-1).numpy(), s_b * s_t)


def test_mxfp4_scales_ocp_and_no_overflow():
    amaxes = [4.0, 5.0, 6.0, 7.0, 8.0, 0.3, 1e-3, 3.0e5]
    x = torch.zeros(len(amaxes), 32)
    x[:, 7] = torch.tensor(amaxes)
    ocp = encode(x, "mxfp4", mx_scale="ocp").block_scales.flatten().tolist()
    nov = encode(x, "mxfp4", mx_scale="no_overflow").block_scales.flatten().tolist()
    assert ocp == [2.0 ** (math.floor(math.log2(a)) - 2) for a in amaxes]
    assert nov == [2.0 ** math.ceil(math.log2(a / 6)) for a in amaxes]
    assert ocp[:5] == [1.0, 1.0, 1.0, 1.0, 2.0] and nov[:5] == [1.0, 1.0, 1.0, 2.0, 2.0]
    # OCP saturates 7 -> 6; no_overflow represents 7 as 4 * 2 (nearest of 3.5 with ties to even)
    assert quantize(x, "mxfp4", mx_scale="ocp")[3, 7].item() == 6.0
    assert quantize(x, "mxfp4", mx_scale="no_overflow")[3, 7].item() == 8.0
    # E8M0 exponent range is clamped to [-127, 127]
    tiny = torch.zeros(1, 32)
    tiny[0, 0] = 1e-42
    assert encode(tiny, "mxfp4").block_scales.item() == 2.0**-127


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_stochastic_rounding_is_unbiased_against_the_unclamped_value(fmt):
    """E[SR(x)] = x for every element, the block maximum included, compared with the UNCLAMPED
    input. Bound: each draw of element i is one of two grid points, step_i apart, so its std is
    <= step_i / 2 and the mean of n draws lies within 5 * step_i / (2 sqrt(n)) of x_i unless an
    event of probability < 6e-7 per element occurs. A saturating scale would miss by up to a
    whole step at the block max (E[SR(7.5)] = 6 with the OCP MX scale), far outside the bound."""
    block = {"nvfp4": 16, "mxfp4": 32}[fmt]
    g = torch.Generator().manual_seed(4)
    row = torch.randn(4 * block, generator=g) * 2
    # block maxima that the nearest scales would clip: 7.5 x 2**e under the OCP MX scale, and
    # amax / 6 just above an E4M3 value (NVFP4 nearest would round the scale down by ~6 %)
    row[0], row[block] = 7.5, -6.0 * 2.125 * 1.06
    draws = 4000
    x = row.repeat(draws, 1)  # identical rows -> identical scales for every draw
    q = quantize(x, fmt, "stochastic", generator=g)
    scale = encode(row.reshape(1, -1), fmt, no_overflow=True).block_scales.expand(-1, -1, block).reshape(-1)
    v = row / scale  # NOT clamped: no-overflow scales keep |v| <= 6
    assert v.abs().max() <= 6.0 * (1 + 2**-22)
    lo = torch.stack([SIGNED_GRID[SIGNED_GRID <= t].max() if t >= -6 else torch.tensor(-6.0) for t in v])
    hi = torch.stack([SIGNED_GRID[SIGNED_GRID >= t].min() if t <= 6 else torch.tensor(6.0) for t in v])
    ratio = q / scale  # NVFP4: grid x scale was rounded once to fp32, so snap to the grid
    picked = SIGNED_GRID[(ratio.unsqueeze(-1) - SIGNED_GRID).abs().argmin(-1)]
    assert ((ratio - picked).abs() <= 1e-6 * picked.abs().clamp(min=1)).all()
    assert ((picked == lo) | (picked == hi)).all()
    mean = picked.mean(0)
    tol = 5 * (hi - lo) / 2 / math.sqrt(draws) + 1e-6
    assert ((mean - v).abs() <= tol).all()
    # at each block maximum the mean matches the unclamped x itself (in x's units)
    amax_idx = row.reshape(-1, block).abs().argmax(1) + torch.arange(0, row.numel(), block)
    err = (q.mean(0) - row)[amax_idx].abs()
    assert (err <= (tol * scale)[amax_idx]).all()
    # both neighbours are actually used where the input sits strictly between them
    between = (lo < v) & (v < hi)
    assert ((picked == lo).any(0) & (picked == hi).any(0))[between].all()
    # grid points themselves never move (a block whose max is 6 has scale 1 under MXFP4)
    exact = torch.tensor([[4.0, -1.5, 0.5, 6.0] * (block // 4)])
    if fmt == "mxfp4":
        assert torch.equal(quantize(exact, "mxfp4", "stochastic"), exact)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("mx_scale", ["ocp", "no_overflow"])
def test_stochastic_rounding_keeps_gaussian_tensors_unshrunk(fmt, mx_scale):
    """Mean of SR(x) / x over a Gaussian tensor: the issue measured a 1.1 % (MXFP4 OCP) and 0.34 %
    (NVFP4 nearest-rounded E4M3) shrink with saturating scales. Bound on sum(SR(x) - x) over
    N = 256 x 4096 elements: std <= sqrt(sum (step_i / 2)**2); 5 std is < 0.15 % of sum |x| here."""
    x = torch.randn(256, 4096, generator=torch.Generator().manual_seed(11))
    q = quantize(x, fmt, "stochastic", generator=torch.Generator().manual_seed(12), mx_scale=mx_scale)
    scale = encode(x, fmt, no_overflow=True).block_scales.expand(-1, -1, FORMATS[fmt]).reshape(x.shape)
    step = torch.where((x / scale).abs() < 2, 0.5, torch.where((x / scale).abs() < 4, 1.0, 2.0)) * scale
    bound = 5 * ((step / 2) ** 2).sum().sqrt()
    # signed error in the direction of x (the shrink): sum sign(x) (SR(x) - x)
    shrink = (torch.sign(x) * (q - x)).sum()
    assert shrink.abs() <= bound, (shrink.item(), bound.item())
    assert bound / x.abs().sum() < 1.5e-3  # tight enough to see the 0.34 % NVFP4 shrink
    # the nearest-rounded saturating scale really does shrink (what the test would catch)
    if fmt == "mxfp4" and mx_scale == "ocp":
        clipped = encode(x, fmt, mx_scale="ocp")  # SR with the OCP scale: saturation at 6
        noise = torch.rand(clipped.values.shape, generator=torch.Generator().manual_seed(12))
        from lit_reason.precision.formats import decode

        biased = decode(encode(x, fmt, noise, "ocp", no_overflow=False), x.shape, x.dtype)
        assert (torch.sign(x) * (biased - x)).sum() < -3 * bound


def test_generator_reproducibility():
    x = torch.randn(4, 64)
    a = quantize(x, "nvfp4", "stochastic", generator=torch.Generator().manual_seed(9))
    b = quantize(x, "nvfp4", "stochastic", generator=torch.Generator().manual_seed(9))
    c = quantize(x, "nvfp4", "stochastic", generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_zeros_and_all_zero_blocks(fmt):
    assert torch.equal(quantize(torch.zeros(2, 64), fmt), torch.zeros(2, 64))
    x = torch.randn(2, 64)
    x[1, 32:] = 0.0  # an all-zero block next to non-zero ones
    q = quantize(x, fmt)
    assert torch.equal(q[1, 32:], torch.zeros(32)) and torch.isfinite(q).all()
    assert (q[0] != 0).any()


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_non_finite_values_pass_through_and_do_not_spoil_their_block(fmt):
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(5))
    bad = x.clone()
    bad[0, 3], bad[1, 40], bad[2, 0] = float("inf"), float("-inf"), float("nan")
    q = quantize(bad, fmt)
    assert q[0, 3].item() == float("inf") and q[1, 40].item() == float("-inf") and q[2, 0].isnan()
    clean = bad.clone()
    clean[0, 3] = clean[1, 40] = clean[2, 0] = 0.0
    finite = torch.isfinite(bad)
    assert torch.equal(q[finite], quantize(clean, fmt)[finite])


def test_shapes_not_divisible_by_block_size():
    x = torch.randn(5, 37, generator=torch.Generator().manual_seed(6)) * 3
    # MXFP4 has no tensor scale: the tail is its own (shorter) block
    q = quantize(x, "mxfp4")
    assert torch.equal(q, torch.cat([quantize(x[:, :32], "mxfp4"), quantize(x[:, 32:], "mxfp4")], 1))
    # NVFP4: identical to quantizing the zero-padded tensor and cutting the padding off
    padded = torch.nn.functional.pad(x, (0, 11))
    assert torch.equal(quantize(x, "nvfp4"), quantize(padded, "nvfp4")[:, :37])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_shape_and_dtype_preserved(dtype):
    for shape in [(), (7,), (2, 3, 40), (0, 16)]:
        x = torch.randn(shape).to(dtype)
        for fmt in ["nvfp4", "mxfp4"]:
            q = quantize(x, fmt, "stochastic")
            assert q.shape == x.shape and q.dtype == dtype
    x = torch.randn(4, 64).to(torch.bfloat16)
    # MXFP4 values are exact in bf16: the bf16 result equals the fp32 result
    assert torch.equal(quantize(x, "mxfp4").float(), quantize(x.float(), "mxfp4"))


def test_bad_arguments_raise_one_clear_error():
    with pytest.raises(ValueError, match="fmt"):
        quantize(torch.ones(4), "fp4")
    with pytest.raises(ValueError, match="rounding"):
        quantize(torch.ones(4), rounding="up")
    with pytest.raises(ValueError, match="mx_scale"):
        quantize(torch.ones(4), "mxfp4", mx_scale="floor")
    with pytest.raises(TypeError):
        quantize(torch.ones(4, dtype=torch.int32))


@pytest.mark.skipif(os.environ.get("LIT_REASON_FP4_COMPILE_TEST") != "1",
                    reason="compiling with Inductor takes ~1.5 min on CPU; set LIT_REASON_FP4_COMPILE_TEST=1")
def test_compiled_kernel_path_matches_eager_on_cpu():
    """The CUDA path is torch.compile(fake_quantize); compiled on CPU it must agree bit for bit."""
    from lit_reason.precision.kernels import compiled_fake_quantize

    x = torch.randn(64, 100) * 3
    noise = torch.rand(64, 7, 16)
    compiled = compiled_fake_quantize()
    for fmt, u in [("nvfp4", None), ("mxfp4", None), ("nvfp4", noise)]:
        assert torch.equal(compiled(x, fmt, u, "ocp"), fake_quantize(x, fmt, u, "ocp"))


def test_backend_dispatch(monkeypatch):
    from lit_reason.precision import formats, kernels

    monkeypatch.delenv("LIT_REASON_FP4_BACKEND", raising=False)
    monkeypatch.delenv("LIT_REASON_FP4_COMPILE", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert kernels.backend_name(cpu) == "eager"
    assert kernels.fake_quantize_fn(cpu) is formats.fake_quantize
    assert kernels.backend_name(cuda) == ("triton" if kernels.triton_available() else "eager")
    monkeypatch.setenv("LIT_REASON_FP4_BACKEND", "compile")
    assert kernels.backend_name(cpu) == "eager" and kernels.backend_name(cuda) == "compile"
    # one compiled function per variant, so shapes are the only thing one Dynamo cache sees
    a = kernels.compiled_variant("nvfp4", False, "ocp", torch.float32)
    assert a is kernels.compiled_variant("nvfp4", False, "ocp", torch.float32)
    assert a is not kernels.compiled_variant("nvfp4", True, "ocp", torch.float32)
    monkeypatch.setenv("LIT_REASON_FP4_COMPILE", "0")
    assert kernels.backend_name(cuda) == "eager"
    monkeypatch.setenv("LIT_REASON_FP4_BACKEND", "fast")
    monkeypatch.delenv("LIT_REASON_FP4_COMPILE")
    with pytest.raises(ValueError, match="LIT_REASON_FP4_BACKEND"):
        kernels.backend_name(cpu)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_nearest_matches_torchao_reference_quantizers(fmt):
    """torchao's MXTensor (FLOOR scale = OCP) and NVFP4Tensor are independent implementations."""
    pytest.importorskip("torchao")
    from torchao.prototype.mx_formats.mx_tensor import MXTensor
    from torchao.prototype.mx_formats.nvfp4_tensor import (
        NVFP4Tensor,
        per_tensor_amax_to_scale,
    )

    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(8)) * torch.logspace(-2, 2, 64).reshape(64, 1)
    if fmt == "mxfp4":
        ref = MXTensor.to_mx(x, torch.float4_e2m1fn_x2, block_size=32).dequantize(torch.float32)
    else:
        ref = NVFP4Tensor.to_nvfp4(x, per_tensor_scale=per_tensor_amax_to_scale(x.abs().max())).dequantize(torch.float32)
    assert torch.equal(quantize(x, fmt), ref)


def test_reference_never_divides_by_a_python_number():
    """CUDA divides a tensor by a Python number (or a CPU scalar tensor) as a multiplication by
    the reciprocal, which the Triton kernel's ``div_rn`` does not: every division in the eager
    reference must have a divisor tensor on the dividend's device, or an exact power of two. A
    TorchFunctionMode records every division of an NVFP4 / MXFP4 fake-quantize, both roundings."""
    import math

    from torch.overrides import TorchFunctionMode

    from lit_reason.precision import formats

    seen = []

    class Divisions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.Tensor.__truediv__, torch.Tensor.div, torch.div, torch.true_divide):
                seen.append((args[0], args[1]))
            return func(*args, **(kwargs or {}))

    x = torch.randn(8, 40) * 3
    with Divisions():
        for fmt in ("nvfp4", "mxfp4"):
            formats.fake_quantize(x, fmt)
            formats.fake_quantize(x, fmt, torch.rand(8, -(-40 // formats.FORMATS[fmt]), formats.FORMATS[fmt]))
    assert len(seen) >= 8
    for dividend, divisor in seen:
        if isinstance(divisor, torch.Tensor):
            assert divisor.device == dividend.device
        else:
            assert math.log2(abs(divisor)).is_integer(), f"division by the Python number {divisor}"
    # and the helper rounds once: the float64 quotient rounded to float32
    v = torch.rand(10_000) * 1000
    assert torch.equal(formats.true_divide(v, 6.0), (v.double() / 6.0).float())
