"""pass@k: the unbiased estimator and torchmetrics metrics built on it (math and puzzles alike).

With n samples for a problem of which c are correct, the probability that at least one of k
samples drawn without replacement is correct is

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i)

The product form avoids the huge binomials. The metrics keep sum-reduced states (sum of
per-problem estimates, number of problems), so torchmetrics syncs them across ranks by summing.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples, ``c`` of them correct (needs k <= n)."""
    n, c, k = int(n), int(c), int(k)
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n samples per problem, got n={n}: sample at least k completions")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def counts_from_scores(scores: torch.Tensor | Sequence[float], group_size: int, threshold: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-problem (n, c) from a flat list of scores laid out as consecutive groups of
    ``group_size`` samples per problem; a sample is correct when its score >= ``threshold``."""
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if group_size < 1 or scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group_size} samples per problem")
    correct = (scores >= threshold).reshape(-1, group_size).sum(dim=1)
    return torch.full_like(correct, group_size), correct


def _as_counts(n, c, scores, group_size, threshold) -> tuple[list[int], list[int]]:
    if scores is not None:
        if n is not None or c is not None:
            raise ValueError("pass either per-problem counts (n, c) or grouped scores (scores, group_size), not both")
        if group_size is None:
            raise ValueError("grouped scores need group_size (samples per problem)")
        n, c = counts_from_scores(scores, group_size, threshold)
    if n is None or c is None:
        raise ValueError("pass per-problem counts n and c, or scores with group_size")
    n = torch.as_tensor(n).flatten().tolist()
    c = torch.as_tensor(c).flatten().tolist()
    if len(n) != len(c):
        raise ValueError(f"got {len(n)} sample counts for {len(c)} correct counts")
    return [int(x) for x in n], [int(x) for x in c]


class PassAtK(Metric):
    """Mean over problems of the unbiased pass@k.

    ``update(n, c)`` with per-problem sample / correct counts, or
    ``update(scores=..., group_size=G)`` with the flat scores of G samples per problem.
    ``PassAtK(1)`` is the per-problem mean accuracy.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, k: int = 1, threshold: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"pass@k needs k >= 1, got {k}")
        self.k, self.threshold = int(k), float(threshold)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("problems", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, n=None, c=None, *, scores=None, group_size: int | None = None) -> None:
        ns, cs = _as_counts(n, c, scores, group_size, self.threshold)
        self.total += sum(pass_at_k(ni, ci, self.k) for ni, ci in zip(ns, cs))
        self.problems += len(ns)

    def compute(self) -> torch.Tensor:
        return (self.total / self.problems.clamp_min(1)).float()


class SampleAccuracy(Metric):
    """Fraction of all sampled completions that are correct (sum c / sum n over problems).

    Differs from ``PassAtK(1)`` only when problems have different sample counts.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, threshold: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("samples", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, n=None, c=None, *, scores=None, group_size: int | None = None) -> None:
        ns, cs = _as_counts(n, c, scores, group_size, self.threshold)
        for ni, ci in zip(ns, cs):
            if not 0 <= ci <= ni:
                raise ValueError(f"accuracy needs 0 <= c <= n, got n={ni}, c={ci}")
        self.correct += sum(cs)
        self.samples += sum(ns)

    def compute(self) -> torch.Tensor:
        return (self.correct / self.samples.clamp_min(1)).float()
