"""LLD as the NTHR paper defines it: each training batch's update, judged on that batch's own
correct responses.

For every question of the batch whose group holds both correct and incorrect responses,

    Delta(x) = mean over its correct responses y+ of  ln pi_new(y+ | x) - ln pi_old(y+ | x)

where pi_old is the policy that sampled the batch and pi_new the policy after the step's update
(all its optimizer steps). ``ln pi_old`` is the sum of the sampler's log-probs, which equal the
training forward's (tested on the real model to 1e-4); ``ln pi_new`` is one no-grad forward over
the correct rows only, through the module's own ``policy_logits`` (so at the sampling
temperature, and with HRPO's latents). :class:`callbacks.lld_monitor.LLDMonitor` measures the
same quantity on a fixed probe set instead. Logged per step:

    lld/batch_mean_delta        mean Delta over the batch's mixed questions
    lld/batch_share_displaced   share of them with Delta < epsilon (0: the likelihood fell)
    lld/batch_questions         how many questions were mixed (0: nothing was measured)
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from lit_reason.algorithms.objectives import token_logps


def question_deltas(before: Tensor, after: Tensor, question: Tensor) -> Tensor:
    """``[Q]`` mean of ``after - before`` per question, for the questions in ``question`` (sorted ids)."""
    ids, index = torch.unique(question, return_inverse=True)
    sums = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, index, (after - before).double())
    counts = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
    return sums / counts


def mixed_correct_rows(scores: Tensor, group_size: int) -> Tensor:
    """Indices of the correct rows (score >= 1) of groups that also hold an incorrect one."""
    correct = (scores >= 1.0).reshape(-1, group_size)
    mixed = correct.any(-1) & ~correct.all(-1)
    return (mixed[:, None] & correct).reshape(-1).nonzero().flatten()


class BatchLLDMonitor(L.Callback):
    """Logs the paper's LLD of every ``every_n_steps``-th training step (see the module docstring).

    Args:
        every_n_steps: measure every n-th step (each measurement costs one forward over the
            batch's correct rows of mixed groups).
        epsilon: a question counts as displaced when its Delta is below this (nats).
    """

    def __init__(self, every_n_steps: int = 1, epsilon: float = 0.0) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError("BatchLLDMonitor: every_n_steps must be >= 1")
        self.every_n_steps, self.epsilon = every_n_steps, epsilon
        self.history: list[dict[str, Any]] = []
        self._batches = 0  # training steps seen (global_step counts optimizer steps, several per batch)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._batches += 1
        if not isinstance(outputs, dict) or outputs.get("rollout") is None or (self._batches - 1) % self.every_n_steps:
            return
        rollout, G = outputs["rollout"], pl_module.hparams.num_generations
        rows = mixed_correct_rows(torch.tensor(outputs["scores"]), G)
        figures = {"lld/batch_questions": 0.0}
        if rows.numel():
            part = rollout.select(rows.to(rollout.completion_ids.device))
            mask = part.completion_mask.float()
            before = (part.logprobs.float() * mask).sum(-1).cpu()
            was_training = pl_module.policy.training
            pl_module.policy.eval()
            try:
                logits, _ = pl_module.policy_logits(pl_module.policy, part)
                after = (token_logps(logits, part.completion_ids) * mask).sum(-1).cpu()
            finally:
                pl_module.policy.train(was_training)
            deltas = question_deltas(before, after, rows // G)
            figures = {"lld/batch_mean_delta": float(deltas.mean()),
                       "lld/batch_share_displaced": float((deltas < self.epsilon).double().mean()),
                       "lld/batch_questions": float(deltas.numel())}
            self.history.append({"step": self._batches - 1, **figures, "deltas": deltas.tolist()})
        pl_module.log_dict(figures, batch_size=len(rollout.texts))
