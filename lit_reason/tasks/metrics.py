"""Accuracy broken down by tags (task, category, difficulty, ...) as one torchmetrics Metric.

The group names are declared up front (a DataModule knows its tasks), so the state is two
fixed-size tensors that torchmetrics can sum across ranks; lazily created per-key metrics would
deadlock under DDP when ranks see different tasks.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torchmetrics import Metric


def problem_groups(metadata: dict | None, keys: Sequence[str] = ("task", "category", "difficulty", "level", "subject")) -> list[str]:
    """The group names one problem belongs to, e.g. ``["task/game24", "category/Arithmetic"]``."""
    if not metadata:
        return []
    return [f"{k}/{metadata[k]}" for k in keys if metadata.get(k) is not None]


class GroupedAccuracy(Metric):
    """Mean of a per-item correctness score within each declared group.

    Args:
        groups: the group names, e.g. ``["task/maze", "category/Graph", "difficulty/easy"]``.
    """

    full_state_update = False

    def __init__(self, groups: Iterable[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.groups = list(dict.fromkeys(groups))
        self.index = {g: i for i, g in enumerate(self.groups)}
        n = len(self.groups)
        self.add_state("correct", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor | Sequence[float], groups: Sequence[Sequence[str]]) -> None:
        """``scores[i]`` (in [0, 1]) counts toward every known group in ``groups[i]``."""
        scores = torch.as_tensor(scores, dtype=torch.float64).flatten().tolist()
        if len(scores) != len(groups):
            raise ValueError(f"got {len(scores)} scores for {len(groups)} group lists")
        for score, names in zip(scores, groups):
            for name in names:
                i = self.index.get(name)
                if i is not None:
                    self.correct[i] += score
                    self.total[i] += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """Accuracy per group that saw at least one item."""
        seen = self.total > 0
        acc = torch.where(seen, self.correct / self.total.clamp_min(1), torch.zeros_like(self.total))
        return {g: acc[i].float() for g, i in self.index.items() if bool(seen[i])}
