"""pass@k estimator and metrics against hand-computed values and the closed form."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lit_reason.algorithms.pass_at_k import PassAtK, SampleAccuracy, counts_from_scores, pass_at_k


def closed_form(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        # n=5, c=2, k=1: 1 - C(3,1)/C(5,1) = 1 - 3/5 = 2/5
        (5, 2, 1, 2 / 5),
        # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 7/10
        (5, 2, 2, 7 / 10),
        # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2
        (4, 1, 2, 1 / 2),
        # n=10, c=3, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252 = 11/12
        (10, 3, 5, 11 / 12),
        # n=8, c=0, k=4: no correct sample at all -> 0
        (8, 0, 4, 0.0),
        # n=6, c=4, k=3: n-c=2 < k, every 3-subset holds a correct one -> 1
        (6, 4, 3, 1.0),
        # n=3, c=3, k=1 -> 1
        (3, 3, 1, 1.0),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_closed_form_and_brute_force():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = closed_form(n, c, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
                # brute force: fraction of k-subsets of the samples that hold a correct one
                samples = [1] * c + [0] * (n - c)
                subsets = list(itertools.combinations(range(n), k))
                hit = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(hit, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(200, 100) overflows a float; the product form does not need it.
    value = pass_at_k(200, 3, 100)
    # 1 - C(197,100)/C(200,100) = 1 - (100*99*98)/(200*199*198)
    assert value == pytest.approx(1 - (100 * 99 * 98) / (200 * 199 * 198), rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_bad_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_counts_from_grouped_scores():
    n, c = counts_from_scores([1, 0, 1, 0, 0, 0, 1, 1, 1], group_size=3)
    assert n.tolist() == [3, 3, 3] and c.tolist() == [2, 0, 3]
    n, c = counts_from_scores([0.5, 1.0], group_size=2, threshold=0.5)
    assert c.tolist() == [2]
    with pytest.raises(ValueError, match="groups of 4"):
        counts_from_scores([1, 0, 1], group_size=4)


def test_pass_at_k_metric_counts_and_scores():
    metric = PassAtK(k=2)
    metric.update(torch.tensor([5, 4]), torch.tensor([2, 1]))  # 7/10 and 1/2
    metric.update(scores=[1, 0, 0, 0], group_size=4)  # n=4, c=1 -> 1/2
    assert metric.compute().item() == pytest.approx((0.7 + 0.5 + 0.5) / 3, abs=1e-6)
    with pytest.raises(ValueError):
        PassAtK(k=3).update([2], [1])  # fewer samples than k


def test_pass_at_1_vs_sample_accuracy():
    # problem A: 1 of 2 correct, problem B: 3 of 4 correct
    pass1, acc = PassAtK(k=1), SampleAccuracy()
    for m in (pass1, acc):
        m.update([2, 4], [1, 3])
    assert pass1.compute().item() == pytest.approx((1 / 2 + 3 / 4) / 2)  # mean over problems
    assert acc.compute().item() == pytest.approx(4 / 6)  # mean over samples


def test_metric_states_are_sum_reduced():
    """Two 'ranks' merged the way torchmetrics syncs (sum of states) equal one metric on all data."""
    a, b, whole = PassAtK(k=2), PassAtK(k=2), PassAtK(k=2)
    a.update([5], [2])
    b.update([4, 6], [1, 0])
    whole.update([5, 4, 6], [2, 1, 0])
    for name, reduce in a._reductions.items():
        assert reduce is torch.sum or getattr(reduce, "__name__", "") in ("sum", "dim_zero_sum")
    a.total += b.total
    a.problems += b.problems
    assert a.compute().item() == pytest.approx(whole.compute().item())
    assert whole.compute().item() == pytest.approx((0.7 + 0.5 + 0.0) / 3, abs=1e-6)
