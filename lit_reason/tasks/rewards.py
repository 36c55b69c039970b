"""Reward sources: named functions ``(problem, completion, score) -> float | None``.

``score`` is ``problem.score(completion)``, computed once per completion by the module and passed
in so that several sources (and the accuracy metric) never re-run a verifier. A source returning
None abstains: if every source abstains for a completion, it is left out of its group's baseline.
A source that raises is logged and counted as 0 for that completion; training goes on.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch

from lit_reason.tasks.answer import count_answer_blocks, extract_answer

RewardFn = Callable[[Any, str, float], "float | None"]


def correctness(problem: Any, completion: str, score: float) -> float:
    """The problem's own verifier: 1 for a correct answer, partial credit where the task gives it."""
    return score


def answer_format(problem: Any, completion: str, score: float) -> float:
    """1 when the completion holds exactly one closed ``<answer>`` block, else 0."""
    return 1.0 if count_answer_blocks(completion) == 1 and extract_answer(completion) is not None else 0.0


REWARD_FUNCTIONS: dict[str, RewardFn] = {"correct": correctness, "format": answer_format}


def resolve_reward(name: str) -> RewardFn:
    """A registered name, or ``package.module:function`` / ``package.module.function`` for your own."""
    if name in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[name]
    module_name, sep, attr = name.partition(":")
    if not sep:
        module_name, _, attr = name.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"unknown reward {name!r}: use one of {sorted(REWARD_FUNCTIONS)} or 'package.module:function'"
        ) from err
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not callable")
    return fn


@dataclass
class ScoredCompletions:
    """What the reward sources said about each completion of a rollout, computed once per
    completion (dynamic sampling keeps these for the rows it trains on instead of scoring again).

    ``scores`` are ``problem.score(completion)``; ``per_source`` holds ``[B]`` values, NaN where
    a source abstained; ``row_errors`` maps a source to ``{row: message}`` where it raised (the
    row then counts 0)."""

    scores: list[float]
    per_source: dict[str, torch.Tensor]
    row_errors: dict[str, dict[int, str]]

    # it reads as the list of its scores, so code written for ``scores: list[float]`` takes it as is
    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self):
        return iter(self.scores)

    def __getitem__(self, row: int) -> float:
        return self.scores[row]

    def total(self, weights: dict[str, float]) -> torch.Tensor:
        """Weighted sum of the sources per completion; NaN where every source abstained."""
        stacked = torch.stack([values * weights[n] for n, values in self.per_source.items()])  # [S, B]
        total = torch.nansum(stacked, 0)
        total[torch.isnan(torch.stack(list(self.per_source.values()))).all(0)] = math.nan
        return total

    def errors(self) -> dict[str, str]:
        """Source name -> its first error message, in row order (sources that never raised are absent)."""
        return {name: rows[min(rows)] for name, rows in self.row_errors.items() if rows}

    def select(self, rows: Sequence[int]) -> ScoredCompletions:
        rows = list(rows)
        index = torch.tensor(rows, dtype=torch.long)
        where = {r: i for i, r in enumerate(rows)}
        return ScoredCompletions([self.scores[r] for r in rows], {n: v[index] for n, v in self.per_source.items()},
                                 {n: {where[r]: m for r, m in errs.items() if r in where}
                                  for n, errs in self.row_errors.items()})

    @staticmethod
    def concat(parts: Sequence[ScoredCompletions]) -> ScoredCompletions:
        offsets = [0]
        for part in parts:
            offsets.append(offsets[-1] + len(part.scores))
        names = list(parts[0].per_source)
        return ScoredCompletions([x for part in parts for x in part.scores],
                                 {n: torch.cat([part.per_source[n] for part in parts]) for n in names},
                                 {n: {off + r: m for part, off in zip(parts, offsets) for r, m in part.row_errors[n].items()}
                                  for n in names})


def score_sources(reward_fns: dict[str, RewardFn], problems: list[Any], completions: list[str],
                  scores: list[float]) -> ScoredCompletions:
    """Call every source once per completion."""
    per_source: dict[str, torch.Tensor] = {}
    row_errors: dict[str, dict[int, str]] = {}
    for name, fn in reward_fns.items():
        values = []
        row_errors[name] = {}
        for row, (problem, text, score) in enumerate(zip(problems, completions, scores)):
            try:
                value = fn(problem, text, score)
                value = math.nan if value is None else float(value)
            except Exception as err:  # noqa: BLE001 - a user's reward must not stop training
                row_errors[name][row] = f"{type(err).__name__}: {err}"
                value = 0.0
            values.append(value)
        per_source[name] = torch.tensor(values, dtype=torch.float32)
    return ScoredCompletions(list(scores), per_source, row_errors)


def score_completions(reward_fns: dict[str, RewardFn], problems: Sequence[Any],
                      completions: Sequence[str]) -> ScoredCompletions:
    """Each completion's ``problem.score`` (its verifier, run once) and every reward source on it."""
    scores = [float(p.score(t)) for p, t in zip(problems, completions)]
    return score_sources(reward_fns, list(problems), list(completions), scores)


def source_metrics(per_source: dict[str, torch.Tensor], errors: dict[str, str],
                   error_sources: Iterable[str] | None = None) -> dict[str, float]:
    """``rewards/<source>/{mean,std}`` over the rows where the source answered (0 when it never did),
    and ``rewards/<source>/errors`` (1 when it raised on some row) for ``error_sources`` (default all)."""
    counted = set(per_source if error_sources is None else error_sources)
    metrics: dict[str, float] = {}
    for name, values in per_source.items():
        present = values[~torch.isnan(values)]
        metrics[f"rewards/{name}/mean"] = float(present.mean()) if present.numel() else 0.0
        metrics[f"rewards/{name}/std"] = float(present.std()) if present.numel() > 1 else 0.0
        if name in counted:
            metrics[f"rewards/{name}/errors"] = float(name in errors)
    return metrics


def compute_rewards(
    reward_fns: dict[str, RewardFn],
    weights: dict[str, float],
    problems: list[Any],
    completions: list[str],
    scores: list[float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, str]]:
    """Weighted sum of the sources per completion.

    Returns ``(total [B] with NaN where every source abstained, per-source [B] with NaN for None,
    errors: source name -> first error message)``.
    """
    scored = score_sources(reward_fns, problems, completions, scores)
    return scored.total(weights), scored.per_source, scored.errors()
