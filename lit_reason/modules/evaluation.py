"""Validation and test of the GRPO family: sample (greedy by default), score with each problem's
verifier, log accuracy, reward, length, pass@k and the accuracy per metric group of the data."""

from __future__ import annotations

from typing import Any

import torch

from lit_reason.modules.episode_evaluation import evaluate_episodes
from lit_reason.modules.policy_passes import PolicyPasses
from lit_reason.rollout_step.episodes import Episodes
from lit_reason.tasks.metrics import GroupedAccuracy, problem_groups


class Evaluation(PolicyPasses):
    """``validation_step`` / ``test_step`` on the validation engine (``val_*`` sampling options).
    The module's ``__init__`` sets ``val_accuracy_by_group = None`` (a Metric, once groups are known)."""

    def setup_metric_groups(self) -> None:
        """Per-group accuracy when the DataModule names groups (``metric_groups()``)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        groups = dm.metric_groups() if dm is not None and hasattr(dm, "metric_groups") else []
        if groups and self.val_accuracy_by_group is None:
            self.val_accuracy_by_group = GroupedAccuracy(groups)

    def _evaluate(self, batch: list[Any], prefix: str) -> dict[str, Any]:
        step = getattr(self, "rollout_step", None)
        if isinstance(step, Episodes):  # model.episodes: validate on the same episodes
            return evaluate_episodes(self, step, batch, prefix)
        k = self.hparams.val_num_samples
        generator = self.sampling_generator(salt=1) if self.val_sampling.temperature > 0 else None
        rollout = self.generate(batch, engine=self.val_engine, repeats=k, generator=generator)
        problems = [p for p in batch for _ in range(k)]
        scores = [float(p.score(t)) for p, t in zip(problems, rollout.texts)]
        correct = [float(s >= 1.0) for s in scores]
        bs = len(batch)
        self.log(f"{prefix}/accuracy", sum(correct) / len(correct), prog_bar=True, batch_size=bs, sync_dist=True)
        self.log(f"{prefix}/reward", sum(scores) / len(scores), batch_size=bs, sync_dist=True)
        self.log(f"{prefix}/mean_length", float(rollout.lengths.float().mean()), batch_size=bs, sync_dist=True)
        if k > 1:
            per_problem = torch.tensor(correct).reshape(bs, k)
            self.log(f"{prefix}/pass@{k}", float((per_problem.sum(-1) > 0).float().mean()), batch_size=bs, sync_dist=True)
        if self.val_accuracy_by_group is not None:
            self.val_accuracy_by_group.update(correct, [problem_groups(getattr(p, "metadata", None)) for p in problems])
        return {"rollout": rollout, "problems": problems, "scores": scores}

    def validation_step(self, batch: list[Any], batch_idx: int) -> dict[str, Any]:
        return self._evaluate(batch, "val")

    def test_step(self, batch: list[Any], batch_idx: int) -> dict[str, Any]:
        return self._evaluate(batch, "test")

    def _log_groups(self, prefix: str) -> None:
        if self.val_accuracy_by_group is None:
            return
        values = self.val_accuracy_by_group.compute()
        self.log_dict({f"{prefix}/acc/{g}": v for g, v in values.items()})
        self.val_accuracy_by_group.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_groups("val")

    def on_test_epoch_end(self) -> None:
        self._log_groups("test")
