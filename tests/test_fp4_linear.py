"""FP4Linear / FP4LinearFunction: the three GEMMs against brute-force references built from quantize()."""

import pytest
import torch
from torch import nn

from lit_reason.precision import FP4Linear, FP4Settings, quantize


def make(settings: FP4Settings, bias: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    ref = nn.Linear(48, 40, bias=bias)
    fp4 = FP4Linear.from_linear(nn.Linear(48, 40, bias=bias), settings)
    fp4.load_state_dict(ref.state_dict())
    x = torch.randn(3, 11, 48)
    dy = torch.randn(3, 11, 40)
    return ref, fp4, x, dy


def run(layer, x, dy):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad


OFF = dict(quantize_weights=False, quantize_activations=False, quantize_gradients=False)


@pytest.mark.parametrize("bias", [True, False])
def test_quantization_off_equals_nn_linear(bias):
    ref, fp4, x, dy = make(FP4Settings(**OFF), bias)
    for a, b in zip(run(ref, x, dy), run(fp4, x, dy)):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_all_gemms_match_brute_force_reference(fmt):
    s = FP4Settings(fmt=fmt, gradient_rounding="nearest", wgrad_activation_rounding="nearest")
    ref, fp4, x, dy = make(s)
    y, dx, dw, db = run(fp4, x, dy)
    x2, dy2, w = x.reshape(-1, 48), dy.reshape(-1, 40), ref.weight.detach()
    q = lambda t: quantize(t, fmt)  # noqa: E731 - blocked along the last dim
    y_ref = q(x2) @ q(w).t() + ref.bias.detach()
    dx_ref = q(dy2) @ q(w.t()).t()  # W re-blocked along N, its dgrad reduction axis
    dw_ref = q(dy2.t()) @ q(x2.t()).t()  # dy^T and x^T blocked along tokens
    torch.testing.assert_close(y, y_ref.reshape(3, 11, 40), rtol=0, atol=1e-5)
    torch.testing.assert_close(dx, dx_ref.reshape(3, 11, 48), rtol=0, atol=1e-5)
    torch.testing.assert_close(dw, dw_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(db, dy2.sum(0))  # bias grad stays high precision
    # and the quantization really changed something
    assert (dw - dy2.t() @ x2).abs().max() > 1e-2


def test_stochastic_backward_uses_its_own_seeded_stream_and_is_unbiased_in_expectation():
    ref, fp4, x, dy = make(FP4Settings(seed=7))
    rng = torch.get_rng_state()
    a = run(fp4, x, dy)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG was not drawn from
    _, again, _, _ = make(FP4Settings(seed=7))  # a fresh layer: same seed, step, layer -> same noise
    assert all(torch.equal(u, v) for u, v in zip(a, run(again, x, dy)))
    _, other, _, _ = make(FP4Settings(seed=8))
    assert not torch.equal(a[2], run(other, x, dy)[2])
    fp4.zero_grad()
    assert not torch.equal(a[2], run(fp4, x, dy)[2])  # the next backward of the step draws anew
    # dgrad's only stochastic operand is dy, so its mean over draws tends to dy @ Q_nearest(W):
    # 300 draws shrink the error of a single draw by ~sqrt(300) = 17x; require 6.7x.
    dw_q = quantize(ref.weight.detach().t(), "nvfp4").t()
    draws = []
    for _ in range(300):
        fp4.zero_grad()
        draws.append(run(fp4, x, dy)[1])
    mean = torch.stack(draws).mean(0).reshape(-1, 48)
    expect = dy.reshape(-1, 40) @ dw_q
    single_err = (draws[0].reshape(-1, 48) - expect).norm()
    assert (mean - expect).norm() < 0.15 * single_err


def test_qaf_quantizes_forward_only():
    ref, fp4, x, dy = make(FP4Settings(qaf=True))
    y, dx, dw, db = run(fp4, x, dy)
    x2, dy2, w = x.reshape(-1, 48), dy.reshape(-1, 40), ref.weight.detach()
    y_ref = quantize(x2) @ quantize(w).t() + ref.bias.detach()
    torch.testing.assert_close(y, y_ref.reshape(3, 11, 40), rtol=0, atol=1e-5)
    torch.testing.assert_close(dx.reshape(-1, 48), dy2 @ w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw, dy2.t() @ x2, rtol=1e-5, atol=1e-5)


def test_per_operand_switches():
    ref, fp4, x, dy = make(FP4Settings(quantize_activations=False, quantize_gradients=False))
    y, dx, dw, _ = run(fp4, x, dy)
    x2, dy2, w = x.reshape(-1, 48), dy.reshape(-1, 40), ref.weight.detach()
    torch.testing.assert_close(y.reshape(-1, 40), x2 @ quantize(w).t() + ref.bias.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(dx.reshape(-1, 48), dy2 @ quantize(w.t()).t(), rtol=0, atol=1e-5)
    torch.testing.assert_close(dw, dy2.t() @ x2, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_compute_dtype_and_master_grads():
    ref, fp4, x, dy = make(FP4Settings())
    x = x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fp4(x)
    assert y.dtype == torch.bfloat16
    y.float().backward(dy)
    assert x.grad.dtype == torch.float32 and fp4.weight.grad.dtype == torch.float32
    assert torch.isfinite(fp4.weight.grad).all()
    exact = (x.detach().reshape(-1, 48) @ ref.weight.detach().t() + ref.bias.detach()).reshape(y.shape)
    rel = (y.float() - exact).norm() / exact.norm()
    assert 0.01 < rel < 0.3  # FP4 error is visible but bounded


def test_from_linear_shares_parameters_and_disabled_is_plain():
    lin = nn.Linear(8, 4)
    fp4 = FP4Linear.from_linear(lin, FP4Settings(enabled=False))
    assert fp4.weight is lin.weight and fp4.bias is lin.bias
    assert list(dict(fp4.named_parameters())) == ["weight", "bias"]
    x = torch.randn(2, 8)
    assert torch.equal(fp4(x), lin(x))


def test_quantized_weight_is_cached_within_a_step_and_invalidated_by_an_update():
    _, fp4, x, dy = make(FP4Settings())
    st = fp4.fp4_state
    run(fp4, x, dy)  # forward: Q(W) along K; backward: Q(W^T) along N
    assert (st.cache_misses, st.cache_hits) == (2, 0)
    fp4.zero_grad()
    a = run(fp4, x, dy)
    with torch.no_grad():  # a rollout decode step reuses the forward copy too
        fp4(x[:, :1])
    assert (st.cache_misses, st.cache_hits) == (2, 3)
    cached = st.cache[(False, torch.float32, "nvfp4", "ocp")][1]
    assert torch.equal(cached, quantize(fp4.weight.detach(), "nvfp4"))
    torch.optim.SGD(fp4.parameters(), lr=0.1).step()  # in-place update bumps the version counter
    fp4.zero_grad()
    b = run(fp4, x, dy)
    assert st.cache_misses == 4 and not torch.equal(a[0], b[0])
    assert torch.equal(st.cache[(False, torch.float32, "nvfp4", "ocp")][1], quantize(fp4.weight.detach(), "nvfp4"))
    # caching changes nothing numerically
    _, plain, _, _ = make(FP4Settings(cache_weights=False))
    plain.load_state_dict(fp4.state_dict())
    assert torch.equal(plain(x), fp4(x)) and plain.fp4_state.cache == {}
