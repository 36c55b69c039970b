"""Reward sources: named functions ``(problem, completion, score) -> float | None``, or TRL's
batched ``(prompts, completions, **columns) -> list[float | None]`` (see ``reward_calls``).

``score`` is ``problem.score(completion)``, computed once per completion by the module and passed
in so that several sources (and the accuracy metric) never re-run a verifier. A source returning
None abstains: if every source abstains for a completion, it is left out of its group's baseline.
A source that fails (raises, returns a non-number, a non-finite or out-of-range value) stops the
run in one line, or with ``on_reward_error: zero`` counts 0 for that completion (``reward_calls``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch

from lit_reason.tasks.answer import count_answer_blocks, extract_answer
from lit_reason.tasks.reward_calls import RewardSource, RewardSources
from lit_reason.utils.imports import import_path

RewardFn = Callable[[Any, str, float], "float | None"]


def correctness(problem: Any, completion: str, score: float) -> float:
    """The problem's own verifier: 1 for a correct answer, partial credit where the task gives it."""
    return score


def answer_format(problem: Any, completion: str, score: float) -> float:
    """1 when the completion holds exactly one closed ``<answer>`` block, else 0."""
    return 1.0 if count_answer_blocks(completion) == 1 and extract_answer(completion) is not None else 0.0


REWARD_FUNCTIONS: dict[str, RewardFn] = {"correct": correctness, "format": answer_format}


def resolve_reward(name: str) -> RewardFn:
    """A registered name, or ``package.module:function`` / ``package.module.function`` for your own
    (a module on PYTHONPATH, an installed package, or a file in the directory you run from)."""
    fn = import_path(name, "reward", REWARD_FUNCTIONS)
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not callable")
    return fn


def build_reward_sources(weights: dict[str, float], on_error: str = "stop", timeout_s: float | None = 120.0,
                         ranges: dict[str, Sequence[float]] | None = None) -> RewardSources:
    """The module's reward sources: each resolved, its shape detected, bounded by ``timeout_s`` per
    batch (built-ins run inline) and checked against ``ranges[name]`` (or its ``reward_range``)."""
    unknown = set(ranges or {}) - set(weights)
    if unknown:
        raise ValueError(f"model.reward_ranges names {sorted(unknown)}, which are not in model.rewards {sorted(weights)}")
    sources = {}
    for name in weights:
        fn = resolve_reward(name)
        builtin = name in REWARD_FUNCTIONS
        sources[name] = RewardSource(name, fn, (ranges or {}).get(name), None if builtin else timeout_s)
    return RewardSources(sources, on_error)


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

    def abstaining(self, rows: torch.Tensor) -> "ScoredCompletions":
        """A copy in which every source abstains (NaN) on ``rows`` (``[B]`` bool)."""
        per_source = {n: v.masked_fill(rows.to(v.device), math.nan) for n, v in self.per_source.items()}
        return ScoredCompletions(self.scores, per_source, self.row_errors)

    def errors(self) -> dict[str, str]:
        """Source name -> its first error message, in row order (sources that never raised are absent)."""
        return {name: rows[min(rows)] for name, rows in self.row_errors.items() if rows}

    def failure_metrics(self) -> dict[str, float]:
        """``rewards/<source>/failed_rows``: rows where the source failed (counted as 0), per source."""
        return {f"rewards/{name}/failed_rows": float(len(rows)) for name, rows in self.row_errors.items()}

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
    """Call every source once on the batch. ``reward_fns`` from :func:`build_reward_sources` stop on a
    failure (its ``on_error``); a plain dict of functions counts a failed row as 0."""
    per_source: dict[str, torch.Tensor] = {}
    row_errors: dict[str, dict[int, str]] = {}
    for name, fn in reward_fns.items():
        source = fn if isinstance(fn, RewardSource) else RewardSource(name, fn)
        values, row_errors[name] = source(problems, completions, scores)
        per_source[name] = torch.tensor(values, dtype=torch.float32)
    if isinstance(reward_fns, RewardSources):
        reward_fns.raise_first(row_errors, problems)
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
