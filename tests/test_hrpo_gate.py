"""HRPO's gate and latent math (lit_reason/algorithms/hybrid.py) against hand-computed values and brute force."""

import math

import pytest
import torch

from lit_reason.algorithms.hybrid import HybridGate, gate_init_bound, hybrid_inputs_embeds, inverse_softplus, latent_from_logits
from lit_reason.models.policy import load_policy


def test_latent_of_one_hot_is_that_tokens_embedding():
    torch.manual_seed(0)
    table = torch.randn(11, 5)
    logits = torch.zeros(3, 11)
    picks = [4, 0, 10]
    for row, k in enumerate(picks):
        logits[row, k] = 1e4  # softmax is exactly one-hot in float32
    h = latent_from_logits(logits, table, tau=0.5)
    assert torch.equal(h, table[picks])


def test_latent_matches_brute_force_sum():
    torch.manual_seed(1)
    table, logits, tau = torch.randn(7, 4, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64), 0.5
    h = latent_from_logits(logits, table, tau).double()
    for row in range(2):
        z = [math.exp(float(v) / tau) for v in logits[row]]
        p = [v / sum(z) for v in z]
        norm = math.sqrt(sum(v * v for v in p))
        expected = [sum(p[v] * float(table[v, j]) for v in range(7)) / norm for j in range(4)]
        assert h[row].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_latent_rejects_non_positive_tau():
    with pytest.raises(ValueError, match="tau"):
        latent_from_logits(torch.zeros(1, 3), torch.zeros(3, 2), tau=0.0)


def test_inverse_softplus_round_trip():
    y = torch.tensor([1e-5, 1e-3, 0.5, 3.0, 25.0], dtype=torch.float64)
    assert torch.allclose(torch.nn.functional.softplus(inverse_softplus(y)), y, rtol=1e-10)


def test_lambda_init_spans_r_min_to_r_max():
    torch.manual_seed(0)
    gate = HybridGate(512, r_min=0.9, r_max=0.999)
    a0 = torch.exp(-8.0 * torch.nn.functional.softplus(gate.Lambda.detach().double()))
    assert a0.min() >= 0.9 - 1e-6 and a0.max() <= 0.999 + 1e-6
    # uniform over the range: 512 draws land in every tenth of it and average near the middle
    bins = torch.histc(a0.float(), bins=10, min=0.9, max=0.999)
    assert (bins > 0).all()
    assert abs(float(a0.mean()) - (0.9 + 0.999) / 2) < 0.01


def test_gate_forward_matches_hand_computation():
    gate = HybridGate(2, c=8.0)
    with torch.no_grad():
        gate.W_r.weight.zero_(), gate.W_i.weight.zero_()
        gate.W_r.bias.copy_(torch.tensor([0.0, 2.0]))
        gate.W_i.bias.copy_(torch.tensor([1.0, -1.0]))
        gate.Lambda.copy_(torch.tensor([-3.0, 0.5]))
    e, h = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 4.0]])
    out, a = gate(e, h)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected_a, expected = [], []
    for j, (br, bi, lam) in enumerate([(0.0, 1.0, -3.0), (2.0, -1.0, 0.5)]):
        a_j = math.exp(-8 * softplus(lam) * sig(br))
        expected_a.append(a_j)
        expected.append(a_j * float(e[0, j]) + math.sqrt(1 - a_j**2) * sig(bi) * float(h[0, j]))
    assert a[0].tolist() == pytest.approx(expected_a, rel=1e-5)
    assert out[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_at_init_mixed_input_is_close_to_token_embedding():
    torch.manual_seed(0)
    gate = HybridGate(64, r_min=0.99)
    e, h = torch.randn(8, 64), torch.randn(8, 64)
    with torch.no_grad():
        out, a = gate(e, h)
    assert (a > 0.99).all() and (a < 1).all()
    # |out - e| <= (1 - a)|e| + sqrt(1 - a^2)|i h| <= 0.01 |e| + sqrt(1 - 0.99^2) |h| elementwise
    bound = 0.01 * e.abs() + gate_init_bound(0.99) * h.abs()
    assert ((out - e).abs() <= bound + 1e-6).all()
    assert float((out - e).norm() / e.norm()) < 0.15


def test_unmixed_positions_are_exactly_plain_embeddings():
    torch.manual_seed(0)
    gate = HybridGate(16, r_min=0.3, r_max=0.5)
    e, h = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    mix = torch.tensor([[True, False, True], [False, False, True]])
    out, a = gate(e, h, mix)
    assert torch.equal(out[~mix], e[~mix])
    assert torch.equal(a[~mix], torch.ones_like(a[~mix]))
    assert (out[mix] - e[mix]).abs().max() > 0.1  # mixed ones really moved (a <= 0.5 here)


def test_gradients_reach_gate_and_model_not_stored_latents(tiny_policy):
    model = tiny_policy.model
    gate = HybridGate(model.config.hidden_size, r_min=0.5, r_max=0.9)
    ids = torch.tensor([[5, 9, 17, 30]])
    latents = torch.randn(1, 4, model.config.hidden_size, requires_grad=True)
    mix = torch.tensor([[True, True, False, True]])
    embeds = hybrid_inputs_embeds(model, gate, ids, latents, mix)
    model(inputs_embeds=embeds).logits.square().mean().backward()
    assert latents.grad is None
    for name, param in [("Lambda", gate.Lambda), ("W_r", gate.W_r.weight), ("W_i", gate.W_i.weight),
                        ("W_r.bias", gate.W_r.bias), ("embeddings", model.get_input_embeddings().weight)]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_attaches_to_hf_decoders_through_inputs_embeds(preset):
    torch.manual_seed(0)
    model = load_policy(preset).model.eval()
    gate = HybridGate(model.config.hidden_size, r_min=0.5, r_max=0.9)
    ids = torch.tensor([[3, 10, 20, 40, 50]])
    latents = torch.randn(1, 5, model.config.hidden_size)
    plain = model(input_ids=ids).logits
    none_mixed = model(inputs_embeds=hybrid_inputs_embeds(model, gate, ids, latents, torch.zeros(1, 5, dtype=torch.bool))).logits
    assert torch.equal(none_mixed, plain)
    mix = torch.tensor([[False, False, True, True, False]])
    mixed = model(inputs_embeds=hybrid_inputs_embeds(model, gate, ids, latents, mix)).logits
    assert torch.allclose(mixed[:, :2], plain[:, :2], atol=1e-6)  # causal: before the first mixed input
    assert (mixed[:, 2:] - plain[:, 2:]).abs().max() > 1e-3


def test_gate_state_dict_round_trip():
    torch.manual_seed(0)
    gate = HybridGate(8)
    torch.manual_seed(1)
    other = HybridGate(8)
    assert not torch.equal(gate.Lambda, other.Lambda)
    other.load_state_dict(gate.state_dict())
    assert set(gate.state_dict()) == {"W_r.weight", "W_r.bias", "W_i.weight", "W_i.bias", "Lambda"}
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in gate.state_dict().items())


def test_bad_init_range_is_one_clear_error():
    with pytest.raises(ValueError, match="r_min"):
        HybridGate(4, r_min=0.999, r_max=0.99)
