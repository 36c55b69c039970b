"""NTHR math: the vectorised score against a brute-force double loop, the vocabulary restriction,
tau and the selection rule on a hand-built group, and where the weights must stay 1."""

import pytest
import torch

from lit_reason.algorithms import nthr


# --------------------------------------------------------------------------- brute force
def brute_force_neg_scores(ids, mask, hidden, probs, correct, vocab=None):
    """s-(j, k') by the four-term expansion of alpha, one (k, k') pair at a time.

    ``probs`` is over the FULL vocabulary; with ``vocab`` given, <pi+, pi-> only sums over it.
    """
    keep = torch.ones(probs.shape[-1], dtype=torch.bool)
    if vocab is not None:
        keep = torch.zeros_like(keep)
        keep[vocab] = True
    G, T = ids.shape
    pos = [(i, k) for i in range(G) for k in range(T) if correct[i] and mask[i, k]]
    out = []
    for j in range(G):
        for kp in range(T):
            if correct[j] or not mask[j, kp]:
                continue
            total = 0.0
            for i, k in pos:
                yp, yn = int(ids[i, k]), int(ids[j, kp])
                pp, pn = probs[i, k].double(), probs[j, kp].double()
                alpha = float(yp == yn) - float(pn[yp]) - float(pp[yn]) + float((pp * pn)[keep].sum())
                total += alpha * float(hidden[i, k].double() @ hidden[j, kp].double())
            out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def random_group(seed, G=5, T=6, V=17, H=7, vocab_subset=None):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(G, T, V, generator=gen) * 2
    if vocab_subset is not None:  # the policy puts no mass outside the subset
        outside = torch.ones(V, dtype=torch.bool)
        outside[vocab_subset] = False
        logits[..., outside] = float("-inf")
    probs = torch.softmax(logits, -1)
    choices = torch.tensor(vocab_subset) if vocab_subset is not None else torch.arange(V)
    # only a few distinct ids per group, so restricting to S actually drops mass
    few = choices[torch.randperm(len(choices), generator=gen)[:4]]
    ids = few[torch.randint(0, len(few), (G, T), generator=gen)]
    lengths = torch.randint(1, T + 1, (G,), generator=gen)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    hidden = torch.randn(G, T, H, generator=gen)
    correct = torch.tensor([True, False, True, False, False])[:G]
    return ids, mask, hidden, probs, correct


def vectorised_neg_scores(ids, mask, hidden, probs, vocab, correct):
    adv = torch.where(correct, 1.0, -1.0)
    return nthr.group_token_weights(ids, mask, hidden, probs[..., vocab], vocab, correct, adv).neg_scores.double()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_with_full_vocabulary_equals_brute_force(seed):
    ids, mask, hidden, probs, correct = random_group(seed)
    full = torch.arange(probs.shape[-1])
    got = vectorised_neg_scores(ids, mask, hidden, probs, full, correct)
    want = brute_force_neg_scores(ids, mask, hidden, probs, correct)
    assert got.shape == want.shape and want.numel() > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 3])
def test_restricted_score_equals_brute_force_over_the_group_vocabulary(seed):
    ids, mask, hidden, probs, correct = random_group(seed)
    vocab = nthr.group_vocabulary(ids, mask)
    assert vocab.numel() < probs.shape[-1]  # the restriction is real here
    got = vectorised_neg_scores(ids, mask, hidden, probs, vocab, correct)
    torch.testing.assert_close(got, brute_force_neg_scores(ids, mask, hidden, probs, correct, vocab), rtol=1e-5, atol=1e-5)
    # and it differs from the full-vocabulary score only by the dropped <pi+, pi-> mass
    full = brute_force_neg_scores(ids, mask, hidden, probs, correct)
    assert not torch.allclose(got, full, atol=1e-6)


def test_restricted_equals_full_vocabulary_when_no_mass_lies_outside_the_set():
    ids, mask, hidden, probs, correct = random_group(4, vocab_subset=[1, 4, 5, 9])
    vocab = nthr.group_vocabulary(ids, mask)
    got = vectorised_neg_scores(ids, mask, hidden, probs, vocab, correct)
    torch.testing.assert_close(got, brute_force_neg_scores(ids, mask, hidden, probs, correct), rtol=1e-5, atol=1e-5)


def test_influence_scores_matches_explicit_alpha_times_gram():
    gen = torch.Generator().manual_seed(5)
    e_src, h_src = torch.randn(9, 4, generator=gen), torch.randn(9, 3, generator=gen)
    e_dst, h_dst = torch.randn(6, 4, generator=gen), torch.randn(6, 3, generator=gen)
    want = ((e_src @ e_dst.T) * (h_src @ h_dst.T)).sum(0)
    torch.testing.assert_close(nthr.influence_scores(e_src, h_src, e_dst, h_dst), want, rtol=1e-5, atol=1e-5)


def test_restricted_probs_reads_the_full_softmax():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(5, 11, generator=gen)
    cols = torch.tensor([0, 3, 7])
    torch.testing.assert_close(nthr.restricted_probs(logits, cols), torch.softmax(logits, -1)[:, cols])
    per_row = torch.tensor([[1, 2], [0, 10], [4, 5], [6, 9], [3, 8]])
    torch.testing.assert_close(nthr.restricted_probs(logits, per_row), torch.softmax(logits, -1).gather(-1, per_row))


def test_error_vectors_reject_a_token_outside_the_vocabulary():
    with pytest.raises(ValueError, match="missing from the group vocabulary"):
        nthr.error_vectors(torch.tensor([2, 5]), torch.zeros(2, 2), torch.tensor([2, 4]))


# --------------------------------------------------------------------------- a hand-built group
def hand_group():
    """Two ids, pi = (0.5, 0.5) everywhere, scalar hidden states.

    Error vectors: id 0 -> (0.5, -0.5), id 1 -> (-0.5, 0.5); alpha = +0.5 for equal ids, -0.5 else.
    Correct tokens (id, h): r0 (0, 1) (0, 1); r1 (0, 2). Summed: sum_k alpha(k, y) h_k = +2 for y = 0,
    -2 for y = 1, so s(y, h) = 2h for y = 0 and -2h for y = 1.
      s+: r0 -> [2, 2] (mean 2), r1 -> [4] (mean 4): min mean = 2, tau = 2 beta.
      s-: r2 (0, 1) (1, 1) -> [2, -2]; r3 (1, -1) -> [2]; r4 (1, 1) -> [-2].
    """
    ids = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 0], [1, 0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 0], [1, 0]])
    hidden = torch.tensor([[1.0, 1.0], [2.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])[..., None]
    probs = torch.full((5, 2, 2), 0.5)
    correct = torch.tensor([True, True, False, False, False])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0])
    return ids, mask, hidden, probs, torch.tensor([0, 1]), correct, adv


def test_hand_group_scores_tau_and_selection():
    ids, mask, hidden, probs, vocab, correct, adv = hand_group()
    res = nthr.group_token_weights(ids, mask, hidden, probs, vocab, correct, adv, beta_nthr=0.5, eta=0.25)
    torch.testing.assert_close(res.neg_scores, torch.tensor([2.0, -2.0, 2.0, -2.0]))
    assert res.tau == pytest.approx(1.0)
    assert res.selected.tolist() == [[False, False], [False, False], [True, False], [True, False], [False, False]]
    torch.testing.assert_close(res.weights, torch.tensor([[1, 1], [1, 1], [0.25, 1], [0.25, 1], [1, 1.0]]))


def test_selection_is_strictly_above_tau():
    """beta 1: tau = 2 and the largest s- is 2: nothing is selected."""
    res = nthr.group_token_weights(*hand_group(), beta_nthr=1.0, eta=0.0)
    assert res.tau == pytest.approx(2.0)
    assert not res.selected.any() and torch.equal(res.weights, torch.ones(5, 2))


def test_threshold_is_the_min_over_responses_of_the_mean_score():
    scores = torch.tensor([1.0, 3.0, 10.0, -1.0, 5.0, 0.0])
    response = torch.tensor([7, 7, 2, 2, 2, 9])  # means: 2, 14/3, 0
    assert nthr.nthr_threshold(scores, response, 1.5) == pytest.approx(0.0)
    assert nthr.nthr_threshold(scores[:5], response[:5], 1.5) == pytest.approx(3.0)


def test_adaptive_eta_uses_the_group_success_rate():
    """2 of 5 correct: eta = 2 |0.5 - 0.4| = 0.2."""
    res = nthr.group_token_weights(*hand_group(), beta_nthr=0.5, eta="adaptive")
    assert res.eta == pytest.approx(0.2)
    assert res.weights[2, 0] == pytest.approx(0.2) and res.weights[3, 0] == pytest.approx(0.2)
    assert [nthr.adaptive_eta(p) for p in (0.0, 0.25, 0.5, 1.0)] == [1.0, 0.5, 0.0, 1.0]
    with pytest.raises(ValueError, match="adaptive"):
        nthr.resolve_eta("sometimes", 0.5)


def test_positive_advantage_tokens_keep_weight_one():
    """r3 is incorrect with a selected-level score but a positive advantage (e.g. partial credit)."""
    ids, mask, hidden, probs, vocab, correct, adv = hand_group()
    adv = torch.tensor([1.0, 1.0, -1.0, 0.5, -1.0])
    res = nthr.group_token_weights(ids, mask, hidden, probs, vocab, correct, adv, beta_nthr=0.5, eta=0.0)
    assert res.weights[3].tolist() == [1.0, 1.0]
    assert res.weights[2].tolist() == [0.0, 1.0]
    assert (res.weights[adv > 0] == 1).all()


@pytest.mark.parametrize("all_correct", [True, False])
def test_groups_that_are_all_right_or_all_wrong_get_weight_one(all_correct):
    ids, mask, hidden, probs, correct = random_group(7)
    correct = torch.full_like(correct, all_correct)
    adv = torch.full((ids.shape[0],), -1.0)
    vocab = torch.arange(probs.shape[-1])
    res = nthr.group_token_weights(ids, mask, hidden, probs, vocab, correct, adv, beta_nthr=-100.0, eta=0.0)
    assert torch.equal(res.weights, torch.ones_like(res.weights))
    assert res.tau is None and res.neg_scores.numel() == 0


def brute_force_pos_scores(ids, mask, hidden, probs, correct, self_terms):
    """s+ of every correct token: the alpha-weighted influence of all correct tokens on it."""
    G, T = ids.shape
    pos = [(i, k) for i in range(G) for k in range(T) if correct[i] and mask[i, k]]
    out = []
    for i2, k2 in pos:
        total = 0.0
        for i, k in pos:
            if not self_terms and (i, k) == (i2, k2):
                continue
            ya, yb = int(ids[i, k]), int(ids[i2, k2])
            pa, pb = probs[i, k].double(), probs[i2, k2].double()
            alpha = float(ya == yb) - float(pb[ya]) - float(pa[yb]) + float((pa * pb).sum())
            total += alpha * float(hidden[i, k].double() @ hidden[i2, k2].double())
        out.append((i2, total))
    return out


@pytest.mark.parametrize("self_terms", [True, False])
def test_the_threshold_with_and_without_self_terms_equals_brute_force(self_terms):
    ids, mask, hidden, probs, correct = random_group(6)
    full = torch.arange(probs.shape[-1])
    adv = torch.where(correct, 1.0, -1.0)
    result = nthr.group_token_weights(ids, mask, hidden, probs, full, correct, adv, beta_nthr=1.0, eta=0.0,
                                      self_terms=self_terms)
    scores = brute_force_pos_scores(ids, mask, hidden, probs, correct, self_terms)
    means = [sum(s for r, s in scores if r == i) / sum(1 for r, _ in scores if r == i) for i in {r for r, _ in scores}]
    assert result.tau == pytest.approx(min(means), rel=1e-5, abs=1e-5)
    # without self terms tau is lower, so at least as many tokens are selected
    other = nthr.group_token_weights(ids, mask, hidden, probs, full, correct, adv, eta=0.0, self_terms=not self_terms)
    low, high = (result, other) if not self_terms else (other, result)
    assert low.tau < high.tau and low.selected.sum() >= high.selected.sum()
