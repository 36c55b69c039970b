"""SFT: supervised warm-up on the gold completions every problem carries (``problem.answer``).

A warm-up before RL needs the prompts to look EXACTLY like the RL prompts, and its accuracy must
be measured exactly like RL's. So this module is a :class:`GRPO` subclass that replaces only the
training step: prompt formatting and truncation (:meth:`GRPO.encode_prompt`), policy loading, the
optimizer and schedule, and validation / test (greedy generation scored by ``problem.score``) are
GRPO's own code. (Its hyperparameters therefore also list GRPO's RL settings, at their defaults.)

One step: ``prompt tokens + answer tokens + EOS``, cross-entropy on the answer and EOS tokens
only (token mean over the batch). With ``export_dir`` the policy and tokenizer are written with
``save_pretrained`` at the end of ``fit``; ``GRPO(model=<export_dir>)`` then starts from them.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor

from lit_reason.algorithms import objectives as obj
from lit_reason.algorithms.lm_head import chunked_head_stats
from lit_reason.models.causal_lm import final_hidden_states, split_causal_lm
from lit_reason.models.lora import LoraSettings, lora_hparams
from lit_reason.modules.grpo import GRPO
from lit_reason.modules.divergence import DivergenceSettings
from lit_reason.utils.config_dataclass import config_dict
from lit_reason.rollout import positions_from_mask

#: Label value ignored by the loss (prompt and padding positions).
IGNORE = -100


def pack_example(prompt_ids: list[int], answer_ids: list[int], max_length: int) -> tuple[list[int], int]:
    """``(ids, n_prompt)``: prompt then answer, cut to ``max_length`` tokens.

    The answer is what is learnt, so the prompt is cut from the LEFT first (as GRPO cuts long
    prompts); only an answer longer than ``max_length`` itself loses its tail.
    """
    answer = answer_ids[:max_length]
    room = max_length - len(answer)
    prompt = prompt_ids[max(0, len(prompt_ids) - room):] if room > 0 else []
    return prompt + answer, len(prompt)


def completion_loss(logits: Tensor, labels: Tensor, chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """``(mean cross-entropy, token count)`` of next-token prediction on positions whose label
    is not :data:`IGNORE`. ``logits[:, t]`` predicts ``labels[:, t + 1]``. (The full-logits path:
    float32 ``chunk_size`` positions at a time, no float32 copy of all the logits.)"""
    targets = labels[:, 1:]
    scored = targets != IGNORE
    count = scored.sum()
    picked = obj.token_logps(logits[:, :-1], targets.clamp_min(0), chunk_size)
    loss = -(picked * scored).sum() / count.clamp_min(1)
    return loss, count


def chunked_completion_loss(hidden: Tensor, head: torch.nn.Linear, labels: Tensor, chunk_size: int = 1024,
                            fp32: bool = False) -> tuple[Tensor, Tensor]:
    """:func:`completion_loss` from the final hidden states ``[B, S, H]`` and the LM head, on the
    scored positions only and a chunk at a time (lit_reason.algorithms.lm_head): no ``[B, S, V]`` logits."""
    targets = labels[:, 1:]
    scored = targets != IGNORE
    count = scored.sum()
    stats = chunked_head_stats(hidden[:, :-1][scored], head.weight, targets[scored], head.bias,
                               chunk_size=chunk_size, fp32=fp32)
    return -stats.logps.sum() / count.clamp_min(1), count


def grpo_defaults() -> dict[str, Any]:
    """GRPO's constructor defaults (every GRPO setting has one)."""
    return {name: p.default for name, p in inspect.signature(GRPO.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


class SFT(GRPO):
    """Supervised fine-tuning on ``prompt + problem.answer + EOS`` (loss on the answer only).

    Args:
        model: preset name (``tiny`` ...), local path or hub name of a causal LM.
        dtype, gradient_checkpointing: as in GRPO.
        prompt_format: ``auto`` | ``chat`` | ``plain``: use the same value as the RL config.
        max_prompt_length, long_prompt: as in GRPO (a long prompt loses the start of its user text).
        max_length: cap on prompt + answer tokens of one training example.
        lr, weight_decay, optimizer, warmup_steps, warmup_ratio, lr_schedule, max_grad_norm: as GRPO.
        val_max_new_tokens: generation length of the greedy validation / test (GRPO's evaluation).
        val_temperature, val_num_samples: evaluation sampling (greedy, one sample by default).
        export_dir: where ``save_pretrained`` writes the policy and tokenizer after ``fit``
            (None: no export). Load it with ``model: <export_dir>`` in a GRPO config.
        sampling_seed: base seed of evaluation sampling (only used when ``val_temperature > 0``).
        lora: LoRA adapters (as in GRPO, see lit_reason.models.lora); ``export`` then writes the adapter.
        chunked_lm_head, logprob_chunk_size, cast_lm_head_to_fp32: as in GRPO; by default the loss
            comes from the hidden states and the head in chunks of answer tokens (no ``[B, S, V]`` logits).
        divergence: as in GRPO: a step with a non-finite loss or gradient is skipped, too many in a row stop.
    """

    def __init__(
        self,
        model: str = "tiny",
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        prompt_format: str = "auto",
        max_prompt_length: int = 512,
        long_prompt: str = "truncate",
        max_length: int = 1024,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        warmup_steps: int = 0,
        warmup_ratio: float = 0.0,
        lr_schedule: str = "constant",
        max_grad_norm: float = 1.0,
        val_max_new_tokens: int = 64,
        val_temperature: float = 0.0,
        val_num_samples: int = 1,
        export_dir: str | None = None,
        sampling_seed: int | None = None,
        lora: LoraSettings | None = None,
        chunked_lm_head: bool = True,
        logprob_chunk_size: int = 1024,
        cast_lm_head_to_fp32: bool = False,
        divergence: DivergenceSettings | None = None,
    ) -> None:
        if max_length < 2:
            raise ValueError(f"model.max_length must be >= 2 (prompt + answer tokens), got {max_length}")
        rl_settings = dict(
            model=model, dtype=dtype, gradient_checkpointing=gradient_checkpointing, prompt_format=prompt_format,
            max_prompt_length=max_prompt_length, long_prompt=long_prompt, max_new_tokens=val_max_new_tokens,
            lr=lr, weight_decay=weight_decay, optimizer=optimizer, warmup_steps=warmup_steps,
            warmup_ratio=warmup_ratio, lr_schedule=lr_schedule, max_grad_norm=max_grad_norm,
            val_temperature=val_temperature, val_num_samples=val_num_samples, val_max_new_tokens=val_max_new_tokens,
            sampling_seed=sampling_seed, lora=lora_hparams(lora), chunked_lm_head=chunked_lm_head,
            logprob_chunk_size=logprob_chunk_size, cast_lm_head_to_fp32=cast_lm_head_to_fp32,
            divergence=config_dict(DivergenceSettings, divergence, "model.divergence"),
        )
        # What save_hyperparameters() stores when GRPO.__init__ calls it (see below).
        self._sft_hparams = {**grpo_defaults(), **rl_settings, "max_length": max_length, "export_dir": export_dir}
        super().__init__(**rl_settings)

    def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:
        """GRPO's code reads its settings from ``self.hparams``, so when ``GRPO.__init__`` saves
        them, SFT stores GRPO's defaults overlaid with the values SFT passed, plus SFT's own
        arguments. (Lightning would otherwise store only the arguments of the class it was asked to
        build, e.g. under LightningCLI, and GRPO's reads of its RL settings would fail.)"""
        if args or getattr(self, "_sft_hparams", None) is None:
            super().save_hyperparameters(*args, **kwargs)
        else:
            super().save_hyperparameters(dict(self._sft_hparams), **kwargs)

    def on_fit_start(self) -> None:
        """GRPO checks its rollout batch divisibility here; SFT has no rollout."""

    # ------------------------------------------------------------------ data -> tensors
    def answer_text(self, problem: Any) -> str:
        answer = getattr(problem, "answer", None)
        if not isinstance(answer, str) or not answer:
            raise ValueError(
                f"SFT needs problems with a gold completion in .answer (got {type(problem).__name__} without one): "
                "use a DataModule whose problems carry answers (Enigmata, math synthetic, toy)"
            )
        return answer

    def encode_examples(self, problems: Sequence[Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Left-padded ``(ids, attention mask, labels)``: prompt tokens exactly as GRPO encodes
        them for a rollout, then the answer tokens and EOS; labels mask all but the answer."""
        h, tok = self.hparams, self.tokenizer
        rows: list[tuple[list[int], int]] = []
        for problem in problems:
            answer_ids = tok(self.answer_text(problem), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            # the prompt gets the room the answer leaves, cut inside its user text (never the template)
            room = min(h.max_prompt_length, max(h.max_length - len(answer_ids), 1))
            prompt_ids = self.encode_prompt(problem.prompt, room)
            rows.append(pack_example(prompt_ids, answer_ids, h.max_length))
        width = max(len(ids) for ids, _ in rows)
        pad = tok.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, (row, n_prompt) in enumerate(rows):
            start = width - len(row)
            ids[i, start:] = torch.tensor(row)
            mask[i, start:] = 1
            labels[i, start + n_prompt:] = torch.tensor(row[n_prompt:])
        return ids.to(self.device), mask.to(self.device), labels.to(self.device)

    def supervised_loss(self, problems: Sequence[Any]) -> tuple[Tensor, Tensor]:
        """``(loss, answer-token count)`` of one batch of problems."""
        ids, mask, labels = self.encode_examples(problems)
        h = self.hparams
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions_from_mask(mask)}
        split = split_causal_lm(self.policy) if h.chunked_lm_head or h.cast_lm_head_to_fp32 else None
        if split is not None and h.chunked_lm_head:
            return chunked_completion_loss(final_hidden_states(split, **inputs), split.head, labels,
                                           h.logprob_chunk_size, h.cast_lm_head_to_fp32)
        if split is not None:  # full logits, computed in float32
            hidden = final_hidden_states(split, **inputs).float()
            bias = None if split.head.bias is None else split.head.bias.float()
            return completion_loss(torch.nn.functional.linear(hidden, split.head.weight.float(), bias), labels,
                                   h.logprob_chunk_size)
        out = self.policy(**inputs, use_cache=False)
        return completion_loss(out.logits, labels, h.logprob_chunk_size)

    # ------------------------------------------------------------------ the step
    def training_step(self, batch: list[Any], batch_idx: int) -> dict[str, Any]:
        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad()
        loss, count = self.supervised_loss(batch)
        self.manual_backward(loss)
        grad_norm = self._grad_norm()
        if self.hparams.max_grad_norm and self.hparams.max_grad_norm > 0:
            self.clip_grad_norm(opt, self.hparams.max_grad_norm)
        lr = float(opt.param_groups[0]["lr"])  # the LR this step applies (the scheduler moves it after)
        if not self.divergence.allow_step(self, [float(loss.detach())], grad_norm):  # lit_reason.modules.divergence
            opt.zero_grad(set_to_none=True)
        opt.step()
        self.divergence.after_step(self, grad_norm, torch.ones(1))  # a supervised loss always has something to learn
        if sched is not None:
            sched.step()
        self.total_tokens += int(count)
        bs = len(batch)
        self.log("loss", float(loss.detach()), prog_bar=True, batch_size=bs)
        self.log_dict({"grad_norm": grad_norm, "num_tokens": float(self.total_tokens),
                       "lr": lr}, batch_size=bs)
        return {"loss": loss.detach(), "problems": list(batch)}

    # ------------------------------------------------------------------ export
    def export(self, directory: str) -> str:
        """Write the policy and its tokenizer with ``save_pretrained`` (loadable by ``load_policy``).
        With LoRA: the adapter, and the merged model in ``<directory>/merged`` (the one to load)."""
        if self.lora is not None:
            from lit_reason.models.export import save_lora_policy, save_merged_policy

            weights = {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}
            save_lora_policy(self.policy, self.tokenizer, directory, state_dict=weights)
            return save_merged_policy(self.hparams.model, self.hparams.dtype, self.lora, weights, self.tokenizer, directory)
        os.makedirs(directory, exist_ok=True)
        self.policy.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return directory

    def on_fit_end(self) -> None:
        if self.hparams.export_dir:
            self._export_rank_zero(self.hparams.export_dir)
            if self.trainer.world_size > 1:
                self.trainer.strategy.barrier("sft_export")

    @rank_zero_only
    def _export_rank_zero(self, directory: str) -> None:
        loadable = self.export(directory)
        rank_zero_info(f"SFT: policy and tokenizer exported to {directory} (use model: {loadable})")
