"""DAPO's dynamic sampling: train only on groups whose rewards disagree, refilling the batch.

A group whose G rewards are all equal has advantage 0 everywhere: it costs a forward/backward and
teaches nothing (with bnpo/dapo it also dilutes the token mean). Dynamic sampling drops such
groups and samples more prompts until the batch holds ``batch_size`` informative groups, with a
cap of ``max_resample_batches`` extra rollout batches per step. If the cap is reached first, the
batch is completed with uninformative groups whose rows are masked out of the loss (the shapes
stay fixed, so minibatch sizes, DDP and memory do not depend on luck).

Where the extra prompts come from (the design that keeps resume and DDP exact): refill batch k of
step s on rank r is the dataset items at indices drawn by a generator seeded from
``(seed, s, r, k)`` — a pure function of the step, never a position in a stream. Nothing has to
be checkpointed, a resumed run draws the same refills, the train loader's own order is untouched
(its resumable position stays what it was), and each rank fills its own batch independently.
The items are drawn from the whole training dataset (with replacement across steps), so a refill
may repeat a problem the loader yields elsewhere in the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from lit_reason.algorithms.objectives import zero_std_groups
from lit_reason.rollout import Rollout
from lit_reason.rollout_step.contract import ScoredRollout
from lit_reason.rollout_step.sampling import SampleNow
from lit_reason.tasks.rewards import ScoredCompletions


_REFILL_SALT = 0x0DA9  # keeps refill draws apart from any other generator seeded from (seed, step, rank)


@dataclass
class FilledBatch:
    """The groups a step trains on, and how many were generated to find them."""

    problems: list[Any]  # one per group (prompt-level)
    rollout: Rollout
    trained_rows: Tensor  # [B] bool: False on the padding groups (rows masked out of the loss)
    generated_groups: int
    kept_groups: int  # informative groups in the batch (<= batch_size)
    rollout_batches: int  # 1 + refills
    sources: list[tuple[int, int]]  # (attempt, group within that attempt's rollout) of each group, in order


def refill_indices(dataset_size: int, count: int, seed: int, step: int, rank: int, attempt: int) -> list[int]:
    """``count`` dataset indices for refill ``attempt`` (>= 1) of ``step`` on ``rank``: distinct
    within the draw, a pure function of the arguments."""
    if dataset_size < 1:
        raise ValueError("dynamic sampling needs a non-empty training dataset to refill from")
    # a tuple of ints hashes the same in every process (a str in it would not: PYTHONHASHSEED)
    gen = torch.Generator().manual_seed(hash((_REFILL_SALT, int(seed), int(step), int(rank), int(attempt))) % (2**63))
    if count <= dataset_size:
        return torch.randperm(dataset_size, generator=gen)[:count].tolist()
    return torch.randint(dataset_size, (count,), generator=gen).tolist()


def _pad(t: Tensor, width: int, value: float, left: bool = False) -> Tensor:
    """``t [B, W, ...]`` padded along dim 1 to ``width`` with ``value`` (any dtype, bool too)."""
    extra = width - t.shape[1]
    if extra <= 0:
        return t
    filler = torch.full((t.shape[0], extra, *t.shape[2:]), value, dtype=t.dtype, device=t.device)
    return torch.cat([filler, t] if left else [t, filler], 1)


def concat_rollouts(parts: Sequence[Rollout], pad_id: int) -> Rollout:
    """One rollout of the rows of ``parts`` in order: prompts re-left-padded, completions and their
    per-position extras (``[B, T, ...]``, e.g. HRPO's latents) re-right-padded with pad / zeros."""
    if len(parts) == 1:
        return parts[0]
    prompt_w = max(p.prompt_ids.shape[1] for p in parts)
    width = max(p.completion_ids.shape[1] for p in parts)
    cat = lambda xs: torch.cat(list(xs), 0)  # noqa: E731
    extras: dict[str, Any] = {}
    for key in parts[0].extras:
        values = [p.extras.get(key) for p in parts]
        if all(isinstance(v, Tensor) and v.dim() >= 2 for v in values):
            extras[key] = cat(_pad(v, width, 0.0) for v in values)
        elif all(isinstance(v, Tensor) and v.dim() == 1 for v in values):
            extras[key] = cat(values)
        else:
            raise ValueError(f"dynamic sampling cannot merge rollout extra {key!r} (not a per-row tensor)")
    return Rollout(
        cat(_pad(p.prompt_ids, prompt_w, pad_id, left=True) for p in parts),
        cat(_pad(p.prompt_mask, prompt_w, 0, left=True) for p in parts),
        cat(_pad(p.completion_ids, width, pad_id) for p in parts),
        cat(_pad(p.completion_mask, width, 0) for p in parts),
        cat(_pad(p.logprobs, width, 0.0) for p in parts),
        cat(p.truncated for p in parts),
        [t for p in parts for t in p.texts],
        sum(p.seconds for p in parts),
        extras,
    )


def fill_informative_groups(draw: Callable[[int], tuple[list[Any], Rollout, Tensor]], batch_size: int,
                            group_size: int, max_resample_batches: int, pad_id: int) -> FilledBatch:
    """Call ``draw(attempt)`` -> ``(problems, rollout, rewards [B])`` for attempt 0, 1, ... until
    ``batch_size`` informative groups are found or ``max_resample_batches`` refills are spent.

    Informative groups are kept in the order they were generated; extra ones are dropped. A short
    batch is completed with the first uninformative groups, flagged in ``trained_rows``. When the
    first rollout is informative throughout it is returned as it is.
    """
    G = group_size
    kept: list[tuple[Any, Rollout, int, int]] = []
    spare: list[tuple[Any, Rollout, int, int]] = []
    generated = attempts = 0
    seconds = 0.0
    for attempt in range(1 + max_resample_batches):
        problems, rollout, rewards = draw(attempt)
        attempts += 1
        seconds += rollout.seconds
        generated += len(problems)
        informative = ~zero_std_groups(rewards.detach().float().cpu(), G)
        if attempt == 0 and len(problems) == batch_size and bool(informative.all()):
            rows = torch.ones(len(rollout.texts), dtype=torch.bool, device=rollout.completion_ids.device)
            return FilledBatch(list(problems), rollout, rows, generated, batch_size, 1, [(0, g) for g in range(batch_size)])
        for g, problem in enumerate(problems):
            (kept if informative[g] else spare).append((problem, rollout, g, attempt))
        if len(kept) >= batch_size:
            break
    chosen = kept[:batch_size]
    n_kept = len(chosen)
    chosen += spare[: batch_size - n_kept]
    parts = [r.select(slice(g * G, (g + 1) * G)) for _, r, g, _ in chosen]
    rollout = concat_rollouts(parts, pad_id)
    rollout.seconds = seconds  # every rollout batch generated this step
    rows = torch.zeros(batch_size * G, dtype=torch.bool, device=rollout.completion_ids.device)
    rows[: n_kept * G] = True
    return FilledBatch([p for p, _, _, _ in chosen], rollout, rows, generated, n_kept, attempts,
                       [(a, g) for _, _, g, a in chosen])


def step_metrics(filled: FilledBatch, batch_size: int, generated_rewards: Sequence[Tensor],
                 totals: dict[str, int]) -> dict[str, float]:
    """What a dynamic-sampling step logs: ``reward`` covers the trained (informative) groups, so
    the mean over every completion generated is logged beside it, with the group counts of the
    step and the run (``totals``: summed over ranks)."""
    every = torch.cat([r.detach().float().cpu() for r in generated_rewards])
    every = every[~torch.isnan(every)]
    return {
        "dynamic_sampling/generated_reward_mean": float(every.mean()) if every.numel() else 0.0,
        "dynamic_sampling/generated_groups": float(filled.generated_groups),
        "dynamic_sampling/kept_groups": float(filled.kept_groups),
        "dynamic_sampling/padded_groups": float(batch_size - filled.kept_groups),
        "dynamic_sampling/rollout_batches": float(filled.rollout_batches),
        "dynamic_sampling/total_generated_groups": float(totals["generated_groups"]),
        "dynamic_sampling/total_kept_groups": float(totals["kept_groups"]),
    }


# --------------------------------------------------------------------------- the rollout step
class DynamicSampling(SampleNow):
    """``model.dynamic_sampling``: the batch's rollout (attempt 0 is exactly :class:`SampleNow`'s),
    refilled with rollouts of extra problems until it holds ``len(batch)`` informative groups or
    ``max_resample_batches`` refills are spent. Every completion is scored once; the kept rows
    keep their scores. ``totals`` (groups generated and kept, summed over ranks) are checkpointed."""

    def __init__(self, max_resample_batches: int) -> None:
        self.max_resample_batches = max_resample_batches
        self.totals = {"generated_groups": 0, "kept_groups": 0}

    def __call__(self, module: Any, batch: list[Any]) -> ScoredRollout:
        G = module.hparams.num_generations
        draws: list[ScoredRollout] = []
        generated_rewards: list[Tensor] = []

        def draw(attempt: int) -> tuple[list[Any], Rollout, Tensor]:
            problems = list(batch) if attempt == 0 else self.refill_problems(module, len(batch), attempt)
            drawn = self.sample(module, problems, salt=100 + attempt if attempt else 0)
            draws.append(drawn)
            needs_old = module.rewards_need_old_pass  # Intuitor's reward comes from the no-grad pass
            old = module.old_policy_pass(drawn.rollout, need_old=False, need_ref=False) if needs_old else {}
            rewards, _ = module.compute_rewards(drawn.rows, drawn.rollout, drawn.scored, old)
            generated_rewards.append(rewards)
            return problems, drawn.rollout, rewards

        filled = fill_informative_groups(draw, len(batch), G, self.max_resample_batches, module.tokenizer.pad_token_id)
        kept = ScoredCompletions.concat([draws[a].scored.select(range(g * G, (g + 1) * G)) for a, g in filled.sources])
        counts = torch.tensor([filled.generated_groups, filled.kept_groups], dtype=torch.float64, device=module.device)
        trainer = getattr(module, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:  # totals over all ranks: rank 0 checkpoints them
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
        self.totals["generated_groups"] += int(counts[0])
        self.totals["kept_groups"] += int(counts[1])
        metrics = step_metrics(filled, len(batch), generated_rewards, self.totals)
        metrics.update(ScoredCompletions.concat([d.scored for d in draws]).failure_metrics())  # every row scored
        return ScoredRollout(filled.problems, filled.rollout, kept, filled.trained_rows, metrics)

    @staticmethod
    def train_dataset(module: Any) -> Any:
        trainer = getattr(module, "_trainer", None)
        return getattr(trainer.train_dataloader if trainer is not None else None, "dataset", None)

    def refill_problems(self, module: Any, count: int, attempt: int) -> list[Any]:
        """The problems of refill ``attempt``: a pure function of (seed, step, rank, attempt)."""
        dataset = self.train_dataset(module)
        indices = refill_indices(len(dataset), count, module.sampling_seed_base(), module.global_step,
                                 module.global_rank, attempt)
        return [dataset[i] for i in indices]

    def on_fit_start(self, module: Any) -> None:
        strategy = module.trainer.strategy
        stage = (getattr(strategy, "config", None) or {}).get("zero_optimization", {}).get("stage")
        if type(strategy).__name__.startswith(("FSDP", "ModelParallel")) or stage == 3:
            raise ValueError("model.dynamic_sampling needs full weights on every rank (DDP, DeepSpeed ZeRO-2): under "
                             "FSDP / ZeRO-3 ranks generating different numbers of batches would wait on each other")

    def on_train_start(self, module: Any) -> None:
        """Refills index the training dataset: it must be a non-empty map-style one."""
        dataset = self.train_dataset(module)
        if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) < 1:
            raise ValueError("model.dynamic_sampling refills from the training dataset by index: it needs a non-empty "
                             "map-style dataset (every ProblemDataModule has one)")

    def state_dict(self) -> dict[str, Any]:
        return {"dynamic_sampling_totals": dict(self.totals)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.totals.update(state.get("dynamic_sampling_totals", {}))
