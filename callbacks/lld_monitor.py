"""Lazy Likelihood Displacement monitor: does an update raise the likelihood of correct answers?

LLD (arXiv 2505.18830): under GRPO the log-likelihood of correct responses rises only marginally,
or falls, after an update, because the negative gradient of incorrect responses drags it down.
This callback measures it on a FIXED probe set of (prompt, correct completion) pairs:

    delta(probe) = ln pi_after(completion | prompt) - ln pi_before(completion | prompt)

summed over the completion's tokens (teacher forcing, EOS included). "Before" is taken in
``on_train_batch_start`` and "after" in ``on_train_batch_end``, so the pair brackets ALL the
optimizer steps of one training step (mu passes x minibatches). Logged per measured step:

    lld/mean_delta        mean of delta over the probes
    lld/share_displaced   share of probes with delta < epsilon (epsilon = 0: likelihood fell)

Cost: two no-grad forward passes over the probes per measured step (``every_n_steps`` thins it).
``history`` keeps every measurement (step, per-probe deltas) for scripts.
"""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import torch
from torch import Tensor

from lit_reason.algorithms.objectives import token_logps
from lit_reason.rollout import positions_from_mask


@torch.no_grad()
def completion_logliks(model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                       completion_mask: Tensor) -> Tensor:
    """``[N]`` sum of ``ln pi(token)`` over each completion (left-padded prompts, right-padded
    completions), by one teacher-forced forward pass at temperature 1."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask], dim=1)
    t = completion_ids.shape[1]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False,
                   logits_to_keep=t + 1).logits[:, :-1]
    return (token_logps(logits, completion_ids) * completion_mask.float()).sum(-1)


class LLDMonitor(L.Callback):
    """Log how one training step changes the log-likelihood of known-correct completions.

    Args:
        probes: ``[prompt, correct completion]`` pairs. None: the first ``num_probes`` training
            problems that have an ``answer`` (the datamodule's train loader, in index order).
        num_probes: how many probes to take from the data when ``probes`` is None.
        every_n_steps: measure every n-th training step (1 = every step).
        epsilon: a probe counts as displaced when its delta is below this (nats).
        batch_size: probes per forward pass.
    """

    def __init__(self, probes: Sequence[Sequence[Any]] | None = None, num_probes: int = 16, every_n_steps: int = 1,
                 epsilon: float = 0.0, batch_size: int = 16) -> None:
        super().__init__()
        if every_n_steps < 1 or num_probes < 1 or batch_size < 1:
            raise ValueError("LLDMonitor: every_n_steps, num_probes and batch_size must be >= 1")
        if probes is not None:
            bad = [p for p in probes if len(p) != 2 or not isinstance(p[1], str)]
            if bad or not probes:
                raise ValueError("LLDMonitor.probes must be a non-empty list of [prompt, correct completion] pairs")
        self.probes = [(p[0], p[1]) for p in probes] if probes is not None else None
        self.num_probes, self.every_n_steps, self.epsilon, self.batch_size = num_probes, every_n_steps, epsilon, batch_size
        self.history: list[dict[str, Any]] = []
        self._before: Tensor | None = None
        self._steps_seen = 0

    # ------------------------------------------------------------------ probes
    def probes_from_data(self, trainer: L.Trainer) -> list[tuple[Any, str]]:
        dm = getattr(trainer, "datamodule", None)
        if dm is None:
            raise ValueError("LLDMonitor needs probes=[[prompt, completion], ...] when training without a datamodule")
        dataset = dm.train_dataloader().dataset
        found = []
        for index in range(min(len(dataset), 50 * self.num_probes)):
            problem = dataset[index]
            answer = getattr(problem, "answer", None)
            if isinstance(answer, str) and answer:
                found.append((problem.prompt, answer))
                if len(found) == self.num_probes:
                    break
        if not found:
            raise ValueError("LLDMonitor: no training problem has an .answer; pass probes=[[prompt, completion], ...]")
        return found

    def encode_completions(self, pl_module: L.LightningModule, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Right-padded ``(ids, mask)`` of the completions, each ending in EOS like a sampled one."""
        tok = pl_module.tokenizer
        rows = [tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for text in texts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], device=pl_module.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=pl_module.device)
        return ids, mask

    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule) -> Tensor:
        """``[num probes]`` current sum log-likelihood of each probe's correct completion."""
        policy = pl_module.policy
        was_training = policy.training
        policy.eval()
        try:
            out = []
            for start in range(0, len(self.probes), self.batch_size):
                chunk = self.probes[start : start + self.batch_size]
                prompt_ids, prompt_mask = pl_module.encode_prompts([p for p, _ in chunk])
                completion_ids, completion_mask = self.encode_completions(pl_module, [c for _, c in chunk])
                out.append(completion_logliks(policy, prompt_ids, prompt_mask, completion_ids, completion_mask))
            return torch.cat(out).cpu()
        finally:
            policy.train(was_training)

    def summarize(self, before: Tensor, after: Tensor) -> dict[str, float]:
        delta = after - before
        return {"lld/mean_delta": float(delta.mean()), "lld/share_displaced": float((delta < self.epsilon).float().mean())}

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.probes is None:
            self.probes = self.probes_from_data(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        measured = self._steps_seen % self.every_n_steps == 0
        self._steps_seen += 1
        self._before = self.measure(pl_module) if measured else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._before is None:
            return
        after = self.measure(pl_module)
        figures = self.summarize(self._before, after)
        self.history.append({"step": self._steps_seen - 1, **figures, "deltas": (after - self._before).tolist()})
        self._before = None
        pl_module.log_dict(figures, batch_size=len(self.probes))
