"""The GRPO math against numbers worked out by hand."""

import math

import pytest
import torch

from lit_reason.algorithms import objectives as obj


def test_group_advantages_by_hand():
    # group [1, 0]: mean .5, Bessel std sqrt((.25 + .25) / 1) = .70711 -> +-.5 / (.70711 + 1e-4)
    adv = obj.group_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), group_size=2)
    expected = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert adv.tolist() == pytest.approx([expected, -expected, 0.0, 0.0], abs=1e-6)


def test_zero_std_group_has_zero_advantage_and_is_flagged():
    rewards = torch.tensor([0.7, 0.7, 0.7, 1.0, 0.0, 0.5])
    adv = obj.group_advantages(rewards, 3)
    assert adv[:3].abs().max() == 0
    assert obj.zero_std_groups(rewards, 3).tolist() == [True, False]


def test_missing_rewards_left_out_of_baseline():
    # group [1, nan, 0]: baseline over {1, 0} only; the NaN member gets 0
    adv = obj.group_advantages(torch.tensor([1.0, float("nan"), 0.0]), 3)
    expected = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert adv.tolist() == pytest.approx([expected, 0.0, -expected], abs=1e-6)


def test_batch_and_none_scaling_by_hand():
    r = torch.tensor([1.0, 0.0, 2.0, 2.0])
    none = obj.group_advantages(r, 2, scale="none")
    assert none.tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])
    std = torch.tensor([1.0, 0.0, 2.0, 2.0]).std().item()  # Bessel over the batch: 0.9574
    batch = obj.group_advantages(r, 2, scale="batch")
    assert batch.tolist() == pytest.approx([0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0, 0], abs=1e-6)


def test_group_advantages_rejects_bad_shapes():
    with pytest.raises(ValueError, match="groups of 3"):
        obj.group_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="scale_rewards"):
        obj.group_advantages(torch.zeros(4), 2, scale="bogus")


def test_kl_k3_by_hand_and_zero_when_equal():
    logp = torch.tensor([0.0, -1.3])
    assert obj.kl_k3(logp, logp).abs().max() == 0
    # ref = log .5, logp = 0: d = -.6931, exp(d) - d - 1 = .5 + .6931 - 1 = .1931
    assert obj.kl_k3(torch.tensor([0.0]), torch.tensor([math.log(0.5)])).item() == pytest.approx(0.5 + math.log(2) - 1)


# Two sequences, T = 3, mask [[1,1,0],[1,1,1]], ratio 1, advantages [1, -2]:
# per-token losses are -A: [-1, -1, (-1)], [2, 2, 2]; masked sum = -2 + 6 = 4 over 5 tokens.
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
ADV = torch.tensor([1.0, -2.0])


@pytest.mark.parametrize(
    "loss_type, kwargs, expected",
    [
        ("grpo", {}, (-1.0 + 2.0) / 2),  # mean of per-sequence means
        ("bnpo", {}, 4 / 5),  # token sum / tokens
        ("dapo", {}, 4 / 5),  # one process: global tokens = local tokens
        ("dr_grpo", {"max_completion_length": 4}, 4 / (2 * 4)),  # / (sequences x max length)
    ],
)
def test_loss_types_by_hand(loss_type, kwargs, expected):
    logps = torch.zeros(2, 3)
    loss, _ = obj.policy_loss(logps, logps, ADV, MASK, loss_type=loss_type, **kwargs)
    assert loss.item() == pytest.approx(expected)


def test_clipping_by_hand():
    # seq 0: A = 1, ratio e^.5 = 1.6487 -> clipped at 1.2 -> -1.2 per token
    # seq 1: A = -1, ratio e^-.6931 = .5 -> min(-.5, .8 * -1) = -.8 -> +.8 per token
    logps = torch.tensor([[0.5, 0.5], [math.log(0.5), math.log(0.5)]])
    old = torch.zeros(2, 2)
    mask = torch.ones(2, 2)
    loss, m = obj.policy_loss(logps, old, torch.tensor([1.0, -1.0]), mask, loss_type="bnpo", eps_low=0.2)
    assert loss.item() == pytest.approx((-1.2 * 2 + 0.8 * 2) / 4)
    assert m["clip_ratio/high_mean"].item() == pytest.approx(0.5)
    assert m["clip_ratio/low_mean"].item() == pytest.approx(0.5)
    loss_hi, _ = obj.policy_loss(logps, old, torch.tensor([1.0, -1.0]), mask, loss_type="bnpo", eps_low=0.2, eps_high=0.28)
    assert loss_hi.item() == pytest.approx((-1.28 * 2 + 0.8 * 2) / 4)


def test_kl_term_and_token_weights():
    logps = torch.zeros(1, 2)
    ref = torch.full((1, 2), math.log(0.5))
    mask = torch.ones(1, 2)
    kl_tok = 0.5 + math.log(2) - 1
    loss, m = obj.policy_loss(logps, logps, torch.tensor([0.0]), mask, loss_type="bnpo", ref_logps=ref, beta=0.1)
    assert loss.item() == pytest.approx(0.1 * kl_tok)
    assert m["kl"].item() == pytest.approx(kl_tok)
    # weights scale only the surrogate: A = -1, w = [0.5, 1] -> per-token [0.5, 1] -> mean 0.75
    loss_w, _ = obj.policy_loss(logps, logps, torch.tensor([-1.0]), mask, loss_type="bnpo", token_weights=torch.tensor([[0.5, 1.0]]))
    assert loss_w.item() == pytest.approx(0.75)


def test_mu1_gradient_equals_reinforce_with_group_baseline(tiny_policy):
    """With one update per rollout the ratio is 1 and the clipped objective's gradient is
    exactly REINFORCE's: -mean_seq( A * mean_t grad log pi )."""
    model = tiny_policy.model
    torch.manual_seed(1)
    ids = torch.randint(5, 100, (4, 7))
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])
    adv = obj.group_advantages(rewards, 2)
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0

    def logps():
        logits = model(input_ids=ids).logits[:, :-1]
        return obj.token_logps(logits, ids[:, 1:])

    model.zero_grad()
    lp = logps()
    loss, _ = obj.policy_loss(lp, lp.detach(), adv, mask, loss_type="grpo")
    loss.backward()
    grad_grpo = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    lp = logps()
    reinforce = -((adv[:, None] * lp * mask).sum(-1) / mask.sum(-1)).mean()
    reinforce.backward()
    for a, b in zip(grad_grpo, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # ...while the loss VALUE is -mean(A) = 0 (advantages sum to 0 per group): "loss is 0" is expected
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_token_logps_and_entropy_match_full_softmax_in_chunks():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    ids = torch.randint(0, 11, (3, 5))
    full = torch.log_softmax(logits, -1)
    torch.testing.assert_close(obj.token_logps(logits, ids, chunk_size=4), full.gather(-1, ids[..., None]).squeeze(-1))
    ent = -(full.exp() * full).sum(-1)
    torch.testing.assert_close(obj.token_entropy(logits, chunk_size=2), ent)
    # bfloat16 logits are upcast per chunk
    lp16 = obj.token_logps(logits.bfloat16(), ids, chunk_size=3)
    assert lp16.dtype == torch.float32


def test_self_certainty_brute_force_uniform_sharpening_mask_temperature():
    torch.manual_seed(0)
    B, T, V = 2, 4, 7
    logits = torch.randn(B, T, V)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    # brute force: -1/(n V) sum_t sum_j log(V p_j)
    expected = []
    for b in range(B):
        total, n = 0.0, 0
        for t in range(T):
            if mask[b, t]:
                p = torch.softmax(logits[b, t] / 0.7, -1)
                total += sum(-math.log(V * p[j].item()) / V for j in range(V))
                n += 1
        expected.append(total / n)
    got = obj.self_certainty(logits, mask, temperature=0.7, chunk_size=3)
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    assert obj.self_certainty(torch.zeros(B, T, V), mask).abs().max() < 1e-6  # uniform -> 0
    values = [obj.self_certainty(logits * s, mask)[0].item() for s in (0.5, 1, 2, 4)]
    assert values == sorted(values)  # sharper -> more certain
    changed = logits.clone()
    changed[0, 3] = 100.0  # a masked position changes nothing
    torch.testing.assert_close(obj.self_certainty(changed, mask), obj.self_certainty(logits, mask))


def test_per_position_functions_accept_time_sliced_logits_without_changing_values():
    """The training forward yields ``logits[:, :-1]`` (non-contiguous): same numbers as contiguous."""
    torch.manual_seed(0)
    full = torch.randn(2, 6, 9)
    sliced = full[:, :-1]
    assert not sliced.is_contiguous()
    ids = torch.randint(0, 9, (2, 5))
    torch.testing.assert_close(obj.token_logps(sliced, ids, chunk_size=3), obj.token_logps(sliced.contiguous(), ids))
    torch.testing.assert_close(obj.token_entropy(sliced, chunk_size=2), obj.token_entropy(sliced.contiguous()))
