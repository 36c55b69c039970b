"""Reward sources: named functions ``(problem, completion, score) -> float | None``.

``score`` is ``problem.score(completion)``, computed once per completion by the module and passed
in so that several sources (and the accuracy metric) never re-run a verifier. A source returning
None abstains: if every source abstains for a completion, it is left out of its group's baseline.
A source that raises is logged and counted as 0 for that completion; training goes on.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable

import torch

from lit_reason.answer import count_answer_blocks, extract_answer

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
    per_source: dict[str, torch.Tensor] = {}
    errors: dict[str, str] = {}
    for name, fn in reward_fns.items():
        values = []
        for problem, text, score in zip(problems, completions, scores):
            try:
                value = fn(problem, text, score)
                value = math.nan if value is None else float(value)
            except Exception as err:  # noqa: BLE001 - a user's reward must not stop training
                errors.setdefault(name, f"{type(err).__name__}: {err}")
                value = 0.0
            values.append(value)
        per_source[name] = torch.tensor(values, dtype=torch.float32)
    stacked = torch.stack([per_source[n] * weights[n] for n in reward_fns])  # [S, B]
    total = torch.nansum(stacked, 0)
    all_missing = torch.stack([torch.isnan(per_source[n]) for n in reward_fns]).all(0)
    total[all_missing] = math.nan
    return total, per_source, errors
