"""SelfCertaintyMonitor: the Intuitor paper's training analyses, and the warning signs of a run
that games its own certainty.

Analysis callback. From the dict ``training_step`` returns (``outputs``) it logs, per step:

    self_certainty/mean, /std      over the rollout's completions (needs ``old["self_certainty"]``,
                                   which Intuitor provides; under plain GRPO these are skipped)
    self_certainty/corr_correct    Pearson correlation between a completion's self-certainty and
                                   its correctness (score >= 1); only when both vary in the batch
    completions/repeat_ngram_ratio share of each completion's token n-grams that repeat an earlier
                                   one (n = 3 by default), averaged over completions with >= n tokens
    completions/length_change      mean length over the last ``window`` steps relative to the
                                   first ``window`` steps (-0.4 = 40 % shorter); from step 2*window on

    completions/distinct_share     distinct completions per group / G, averaged over groups
                                   (1 = every sample differs, 1/G = the group is one completion)

and warns once (rank zero) for each of four signs:

* the length has fallen by more than ``length_drop``, or the windowed repetition ratio exceeds
  ``max_repeat_ratio``: the collapse users report, where a policy raises its certainty by
  repeating tokens or stopping early;
* the windowed distinct share falls to ``min_distinct_share``: sampling at the training
  temperature has become near-deterministic, so groups stop carrying a learning signal;
* a watched labelled metric (``watch``, e.g. ``val/accuracy`` from a validation set with answers)
  has fallen by more than ``watch_drop`` below its first value. On a model that answers in one
  short tag, Intuitor's collapse is confident wrong answers of unchanged length and no repetition
  (docs/real_model.md): only labels show it, so a run without labels in training should still
  validate on a few labelled items and watch them.

(``completions/mean_length`` itself is logged by GRPO.)
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor


def repeated_ngram_ratio(token_ids: Sequence[int], n: int = 3) -> float | None:
    """Share of the ``len - n + 1`` n-grams of ``token_ids`` that already occurred earlier in it.

    0 for text without repeats, close to 1 for one token or phrase repeated; None when the
    sequence is shorter than ``n`` (no n-gram to judge).
    """
    count = len(token_ids) - n + 1
    if count < 1:
        return None
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for i in range(count):
        gram = tuple(token_ids[i : i + n])
        repeats += gram in seen
        seen.add(gram)
    return repeats / count


def batch_repeat_ratio(completion_ids: Tensor, completion_mask: Tensor, n: int = 3) -> float | None:
    """Mean :func:`repeated_ngram_ratio` over the completions (masked tokens dropped) that have one."""
    ratios = []
    for ids, mask in zip(completion_ids.tolist(), completion_mask.tolist()):
        ratio = repeated_ngram_ratio([t for t, m in zip(ids, mask) if m], n)
        if ratio is not None:
            ratios.append(ratio)
    return sum(ratios) / len(ratios) if ratios else None


def distinct_share(completion_ids: Tensor, completion_mask: Tensor, group_size: int) -> float | None:
    """Mean over groups (``group_size`` consecutive rows, problem-major) of distinct completions
    (masked tokens dropped) / group size; None when the rows do not form whole groups of >= 2."""
    rows = completion_ids.shape[0]
    if group_size < 2 or rows == 0 or rows % group_size:
        return None
    texts = [tuple(t for t, m in zip(ids, mask) if m) for ids, mask in zip(completion_ids.tolist(), completion_mask.tolist())]
    shares = [len(set(texts[i:i + group_size])) / group_size for i in range(0, rows, group_size)]
    return sum(shares) / len(shares)


def pearson(x: Tensor, y: Tensor) -> float | None:
    """Pearson correlation of two ``[B]`` vectors; None when either is constant (undefined)."""
    x, y = x.double().flatten(), y.double().flatten()
    dx, dy = x - x.mean(), y - y.mean()
    denom = (dx.square().sum() * dy.square().sum()).sqrt()
    if x.numel() < 2 or float(denom) <= 1e-12:
        return None
    return float((dx * dy).sum() / denom)


class SelfCertaintyMonitor(Callback):
    """Log self-certainty statistics and the collapse warning signs of each training rollout.

    Args:
        ngram: n of the repetition ratio.
        window: steps per window for the length trend and the repetition warning.
        length_drop: warn when the windowed mean length falls below ``(1 - length_drop)`` x the
            first window's (0.5 = halved).
        max_repeat_ratio: warn when the windowed mean repetition ratio exceeds this.
        every_n_steps: analyse every n-th step only (the n-gram count is a Python loop).
        min_distinct_share: warn when the windowed mean distinct share (see above) is at or below
            this (0.25: on average 2 distinct completions in a group of 8); 0 turns it off.
        watch: a logged metric that needs labels (``val/accuracy``, ``rewards/correct/mean``), or
            None. Its first value is the reference.
        watch_drop: warn when ``watch`` falls more than this below its first value (absolute:
            0.1 = ten points of accuracy).
    """

    def __init__(self, ngram: int = 3, window: int = 10, length_drop: float = 0.5, max_repeat_ratio: float = 0.5,
                 every_n_steps: int = 1, min_distinct_share: float = 0.25, watch: str | None = None,
                 watch_drop: float = 0.1) -> None:
        checks = [
            (ngram >= 1, f"SelfCertaintyMonitor.ngram must be >= 1, got {ngram}"),
            (window >= 1, f"SelfCertaintyMonitor.window must be >= 1, got {window}"),
            (0 < length_drop < 1, f"SelfCertaintyMonitor.length_drop must be in (0, 1), got {length_drop}"),
            (0 < max_repeat_ratio <= 1, f"SelfCertaintyMonitor.max_repeat_ratio must be in (0, 1], got {max_repeat_ratio}"),
            (every_n_steps >= 1, f"SelfCertaintyMonitor.every_n_steps must be >= 1, got {every_n_steps}"),
            (0 <= min_distinct_share < 1, f"SelfCertaintyMonitor.min_distinct_share must be in [0, 1), got {min_distinct_share}"),
            (watch_drop > 0, f"SelfCertaintyMonitor.watch_drop must be > 0, got {watch_drop}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.ngram, self.window, self.length_drop, self.max_repeat_ratio = ngram, window, length_drop, max_repeat_ratio
        self.every_n_steps, self.min_distinct_share = every_n_steps, min_distinct_share
        self.watch, self.watch_drop = watch, watch_drop
        self.watch_first: float | None = None
        self.watch_last: float | None = None
        self.recent_distinct: deque[float] = deque(maxlen=window)
        self.first_lengths: list[float] = []
        self.recent_lengths: deque[float] = deque(maxlen=window)
        self.recent_repeats: deque[float] = deque(maxlen=window)
        self.warned: set[str] = set()

    # ------------------------------------------------------------------ the numbers
    def step_metrics(self, outputs: dict[str, Any], group_size: int = 0) -> dict[str, float]:
        """This step's metrics from ``training_step``'s outputs (``group_size``: G, for the
        distinct share); also advances the windows."""
        rollout = outputs["rollout"]
        metrics: dict[str, float] = {}
        certainty = (outputs.get("old") or {}).get("self_certainty")
        if certainty is not None:
            certainty = certainty.detach().float().cpu()
            metrics["self_certainty/mean"] = float(certainty.mean())
            if certainty.numel() > 1:
                metrics["self_certainty/std"] = float(certainty.std())
            scores = outputs.get("scores")
            if scores is not None and len(scores) == certainty.numel():
                correct = torch.tensor([float(s >= 1.0) for s in scores])
                corr = pearson(certainty, correct)
                if corr is not None:
                    metrics["self_certainty/corr_correct"] = corr
        distinct = distinct_share(rollout.completion_ids, rollout.completion_mask, group_size)
        if distinct is not None:
            metrics["completions/distinct_share"] = distinct
            self.recent_distinct.append(distinct)
        repeat = batch_repeat_ratio(rollout.completion_ids, rollout.completion_mask, self.ngram)
        if repeat is not None:
            metrics["completions/repeat_ngram_ratio"] = repeat
            self.recent_repeats.append(repeat)
        length = float(rollout.completion_mask.sum(-1).float().mean())
        if len(self.first_lengths) < self.window:
            self.first_lengths.append(length)
        else:
            self.recent_lengths.append(length)
        change = self.length_change()
        if change is not None:
            metrics["completions/length_change"] = change
        return metrics

    def length_change(self) -> float | None:
        """Last window's mean length / first window's - 1; None until both windows are full."""
        if len(self.recent_lengths) < self.window:
            return None
        first = sum(self.first_lengths) / len(self.first_lengths)
        return sum(self.recent_lengths) / len(self.recent_lengths) / max(first, 1e-9) - 1.0

    def warnings(self) -> list[str]:
        """The warnings due now (each kind at most once per run)."""
        due = []
        change = self.length_change()
        if change is not None and change < -self.length_drop and "length" not in self.warned:
            self.warned.add("length")
            due.append(f"completion length fell by {-change:.0%} since the first {self.window} steps: the policy may be "
                       "gaming self-certainty by stopping early (check samples; consider beta > 0 or mixing in a verifiable reward)")
        if len(self.recent_repeats) == self.window and "repeat" not in self.warned:
            mean_repeat = sum(self.recent_repeats) / self.window
            if mean_repeat > self.max_repeat_ratio:
                self.warned.add("repeat")
                due.append(f"{mean_repeat:.0%} of completion {self.ngram}-grams are repeats over the last {self.window} steps: "
                           "the policy may be gaming self-certainty by repetition (check samples; consider beta > 0)")
        if self.min_distinct_share and len(self.recent_distinct) == self.window and "distinct" not in self.warned:
            mean_distinct = sum(self.recent_distinct) / self.window
            if mean_distinct <= self.min_distinct_share:
                self.warned.add("distinct")
                due.append(f"only {mean_distinct:.0%} of each group's completions differ over the last {self.window} steps: "
                           "sampling has become near-deterministic and groups carry little signal (lower the lr, "
                           "raise beta, or mix in a verifiable reward)")
        if self.watch_first is not None and self.watch_last is not None and "watch" not in self.warned:
            if self.watch_last < self.watch_first - self.watch_drop:
                self.warned.add("watch")
                due.append(f"{self.watch} fell from {self.watch_first:.3f} to {self.watch_last:.3f}: the policy may be "
                           "growing confident in wrong answers (lower the lr, raise beta, or mix in a verifiable reward)")
        return due

    def observe_watched(self, value: float | None) -> None:
        """Record the watched metric's newest value (the first one becomes the reference)."""
        if value is None or value != value:  # None or NaN
            return
        if self.watch_first is None:
            self.watch_first = float(value)
        self.watch_last = float(value)

    # ------------------------------------------------------------------ Lightning hook
    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or outputs.get("rollout") is None or trainer.global_step % self.every_n_steps:
            return
        metrics = self.step_metrics(outputs, int(getattr(pl_module.hparams, "num_generations", 0) or 0))
        if metrics:
            pl_module.log_dict(metrics, batch_size=len(outputs["rollout"].texts), sync_dist=trainer.world_size > 1)
        if self.watch:
            self.observe_watched(_scalar(trainer.callback_metrics.get(self.watch)))
        for message in self.warnings():
            rank_zero_warn(message)

    def on_validation_end(self, trainer, pl_module) -> None:
        # validation metrics (val/accuracy) land in callback_metrics after the val loop
        if self.watch and not trainer.sanity_checking:
            self.observe_watched(_scalar(trainer.callback_metrics.get(self.watch)))
            for message in self.warnings():
                rank_zero_warn(message)

    def state_dict(self) -> dict[str, Any]:
        return {"first_lengths": list(self.first_lengths), "recent_lengths": list(self.recent_lengths),
                "recent_repeats": list(self.recent_repeats), "recent_distinct": list(self.recent_distinct),
                "watch_first": self.watch_first, "watch_last": self.watch_last, "warned": sorted(self.warned)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_lengths = list(state_dict.get("first_lengths", []))
        self.recent_lengths = deque(state_dict.get("recent_lengths", []), maxlen=self.window)
        self.recent_repeats = deque(state_dict.get("recent_repeats", []), maxlen=self.window)
        self.recent_distinct = deque(state_dict.get("recent_distinct", []), maxlen=self.window)
        self.watch_first, self.watch_last = state_dict.get("watch_first"), state_dict.get("watch_last")
        self.warned = set(state_dict.get("warned", []))


def _scalar(value: Any) -> float | None:
    """A logged metric as a float (None when absent or not a single number)."""
    if value is None:
        return None
    if torch.is_tensor(value):
        return float(value) if value.numel() == 1 else None
    return float(value) if isinstance(value, (int, float)) else None
