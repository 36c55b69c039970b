"""The fused Triton quantize kernel is bit-exact with the torch reference (formats.fake_quantize).

Runs on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1, set before the kernels are
first imported), or on the GPU when there is one. Stochastic rounding is compared given the same random bits: the kernel draws
``tl.rand(seed, index)`` in-kernel; ``triton_kernels.uniforms`` writes those very numbers into a
tensor that the torch path takes as its noise. Small tensors: the interpreter is slow.
"""

import os
import sys

import pytest
import torch

# On a CUDA machine the kernels run for real on the GPU; on CPU through the interpreter, which
# must be switched on before triton (and our kernels) are first imported.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# triton.language's own helpers are compiled-or-interpreted when triton is first imported, so if
# another module imported it already (bitsandbytes does) the checks run in a fresh process.
LATE = DEVICE == "cpu" and "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
if DEVICE == "cpu" and not LATE:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")
in_process = pytest.mark.skipif(LATE, reason="triton imported without the interpreter: see the subprocess test")


@pytest.mark.skipif(not LATE, reason="the checks run in this process")
@pytest.mark.integration
def test_triton_checks_in_a_fresh_interpreter_process():
    import subprocess

    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "-p", "no:cacheprovider",
                           __file__], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]

from lit_reason.precision import FORMATS, quantize
from lit_reason.precision.formats import fake_quantize

CASES = [("nvfp4", "ocp"), ("mxfp4", "ocp"), ("mxfp4", "no_overflow")]


def awkward(rows=40, cols=75, seed=0) -> torch.Tensor:
    """Six decades of magnitude per row (NVFP4 scale underflow), a short tail block, zeros,
    +-0, ties, inf and NaN."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.logspace(-4, 2, rows).reshape(rows, 1)
    x[0, :16] = 0.0
    x[1, 3] = -0.0
    x[2, :8] = torch.tensor([0.25, 0.75, 1.25, 2.5, 3.5, 5.0, 7.0, 4.0])
    x[3, 5], x[4, cols - 5], x[5, 0] = float("inf"), float("-inf"), float("nan")
    return x.to(DEVICE)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(torch.nan_to_num(a, nan=123.0), torch.nan_to_num(b, nan=123.0)) and torch.equal(
        a.isnan(), b.isnan()) and torch.equal(torch.signbit(a), torch.signbit(b))


@in_process
@pytest.mark.parametrize("fmt,mx_scale", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_nearest_is_bit_exact(fmt, mx_scale, dtype):
    from lit_reason.precision.kernels import triton_fake_quantize

    x = awkward().to(dtype)
    assert same(triton_fake_quantize(x, fmt, False, 0, mx_scale), fake_quantize(x, fmt, None, mx_scale))
    # a transposed (strided) view is quantized along its own last dim without a copy
    xt = awkward(48, 33, seed=1).to(dtype).t()
    assert same(triton_fake_quantize(xt, fmt, False, 0, mx_scale), fake_quantize(xt, fmt, None, mx_scale))


@in_process
@pytest.mark.parametrize("fmt,mx_scale", CASES)
def test_triton_stochastic_is_bit_exact_given_the_same_random_bits(fmt, mx_scale):
    from lit_reason.precision import triton_kernels
    from lit_reason.precision.kernels import triton_fake_quantize

    block = FORMATS[fmt]
    for x in (awkward(), awkward(48, 33, seed=1).t()):
        rows, cols = x.shape
        n_blocks = -(-cols // block)
        bits = triton_kernels.uniforms(1234, rows, n_blocks * block, DEVICE).reshape(rows, n_blocks, block)
        fused = triton_fake_quantize(x, fmt, True, 1234, mx_scale)
        assert same(fused, fake_quantize(x, fmt, bits, mx_scale))
        assert not same(fused, triton_fake_quantize(x, fmt, True, 1235, mx_scale))  # the seed matters


@in_process
def test_quantize_routes_to_triton_backend(monkeypatch):
    monkeypatch.setenv("LIT_REASON_FP4_BACKEND", "triton")
    x = awkward(16, 64)
    assert same(quantize(x, "nvfp4"), fake_quantize(x, "nvfp4", None, "ocp"))
    a, b = quantize(x, "nvfp4", "stochastic", seed=5), quantize(x, "nvfp4", "stochastic", seed=5)
    assert same(a, b)


@in_process
def test_gpu_check_counts_fp4_mismatches_against_its_tolerance(monkeypatch):
    """``gpu_check_support.fp4_kernel_agreement`` (what the GPU check runs): the Triton kernel
    counts 0 mismatches; a "compiled" path whose scale divisions land an ulp off (as a
    multiplication by the reciprocal does, on CUDA and in inductor, for about half of all
    divisors) differs in many bits but by no grid point, so it is within tolerance; one that rounds one
    element in 50 to the next grid point is counted and fails the tolerance."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from gpu_check_support import fp4_kernel_agreement

    from lit_reason.precision import formats

    def reciprocal(x, fmt, noise, mx_scale="ocp"):
        with monkeypatch.context() as m:
            m.setattr(formats, "true_divide", lambda t, d: t * (1.0 / d) * (1 + 2**-23))
            return formats.fake_quantize(x, fmt, noise, mx_scale)

    def off_by_a_grid_point(x, fmt, noise, mx_scale="ocp"):
        out = formats.fake_quantize(x, fmt, noise, mx_scale).clone()
        out.view(-1)[::50] *= 1.5
        return out

    good = fp4_kernel_agreement(torch.device(DEVICE), rows=8, cols=100, compiled=reciprocal)
    assert good["triton_mismatches"] == 0
    assert good["compiled_bits_differ"] > 0 and good["compiled_grid_mismatches"] == 0
    assert good["compiled_within_tolerance"]
    bad = fp4_kernel_agreement(torch.device(DEVICE), rows=8, cols=100, compiled=off_by_a_grid_point)
    assert bad["compiled_grid_mismatches"] >= 3 * 800 // 50 - 3 * 20  # most multiplied elements are nonzero
    assert not bad["compiled_within_tolerance"]
