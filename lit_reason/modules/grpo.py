"""GRPO as a LightningModule: the whole step visible in :meth:`GRPO.training_step`.

    rollout -> scores/rewards -> group advantages -> token weights -> mu x minibatch updates -> log

Each variant overrides one step: Intuitor the reward (:meth:`compute_rewards`), NTHR the token
weights (:meth:`token_weights`), HRPO how the next input embedding is formed (:meth:`build_engine`
and :meth:`policy_logits`). The math lives in :mod:`lit_reason.objectives`.
"""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_reason import objectives as obj
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine
from lit_reason.metrics import GroupedAccuracy, problem_groups
from lit_reason.optim import build_optimizer, build_scheduler
from lit_reason.policy import load_policy
from lit_reason.prompts import LONG_PROMPT_POLICIES, PROMPT_FORMATS, encode_prompt
from lit_reason.reference import build_reference, check_ref_quantization
from lit_reason.rewards import compute_rewards, resolve_reward
from lit_reason.rng import collect_rng_states, set_rng_states
from lit_reason.rollout import Rollout, RolloutEngine, SamplingConfig, positions_from_mask


class GRPO(L.LightningModule):
    """Group Relative Policy Optimization with the knobs of the reference trainer.

    Args:
        model: preset name (``tiny`` ...), local path or hub name of a causal LM.
        dtype: parameter dtype of the policy (``float32`` | ``bfloat16`` | ``float16``).
        gradient_checkpointing: recompute activations in the training forward.
        num_generations: G, completions per prompt (>= 2). The data batch counts PROMPTS, so the
            rollout batch is always a whole number of groups.
        max_prompt_length: prompts longer than this (in tokens) lose the start of their user text
            (the chat template is never cut), or are rejected with ``long_prompt="error"``.
        prompt_format: ``auto`` (the chat template when the tokenizer has one), ``chat`` or ``plain``.
        max_new_tokens, temperature, top_p, top_k, min_p, stop_strings: sampling (see SamplingConfig).
        rewards: reward source -> weight; sources are names in ``lit_reason.rewards.REWARD_FUNCTIONS``
            or ``package.module:function``. Weight 0 logs a source without training on it.
        scale_rewards: ``group`` | ``batch`` | ``none`` (advantage normalisation).
        loss_type: ``grpo`` | ``bnpo`` | ``dr_grpo`` | ``dapo`` (token aggregation).
        eps_low, eps_high: clipping range of the ratio (eps_high defaults to eps_low).
        beta: weight of the k3 KL to a frozen copy of the initial policy (no copy is made when 0).
        num_iterations: mu, optimisation passes over one rollout (old log-probs stored once).
        minibatch_size: completions per optimizer step (default: the whole rollout).
        micro_batch_size: completions per forward/backward inside a minibatch (memory knob).
        mask_truncated_completions: drop completions that hit ``max_new_tokens`` from the loss.
        entropy_coef: weight of an entropy bonus (0 = off; entropy is always logged).
        lr, weight_decay, optimizer, warmup_steps, warmup_ratio, lr_schedule: see lit_reason.optim.
        max_grad_norm: gradient clipping by global norm (0 = off).
        val_temperature, val_num_samples, val_max_new_tokens: evaluation sampling (greedy by default).
        logprob_chunk_size: positions per float32 chunk when turning logits into log-probs.
        sampling_seed: base seed of the sampling generator (default: the global seed); rollout i is
            drawn from a generator seeded by (seed, global step, rank), so resumed runs re-draw the
            same. (Not called ``seed``: a DataModule's ``seed`` would clash in the loggers' hparams.)
        fast_generation: on CUDA, sample with the static-cache, CUDA-graph engine
            (:mod:`lit_reason.rollout.static_cache`); the CPU path is the plain engine either way.
        ref_quantization: store the frozen reference (beta != 0) in ``8bit`` or ``nf4`` weights via
            bitsandbytes (see lit_reason.reference); null keeps it in ``dtype``.
    """

    def __init__(
        self,
        model: str = "tiny",
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        num_generations: int = 4,
        max_prompt_length: int = 512,
        long_prompt: str = "truncate",
        prompt_format: str = "auto",
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        stop_strings: list[str] | None = None,
        rewards: dict[str, float] | None = None,
        scale_rewards: str = "group",
        loss_type: str = "grpo",
        eps_low: float = 0.2,
        eps_high: float | None = None,
        beta: float = 0.0,
        num_iterations: int = 1,
        minibatch_size: int | None = None,
        micro_batch_size: int | None = None,
        mask_truncated_completions: bool = False,
        entropy_coef: float = 0.0,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        warmup_steps: int = 0,
        warmup_ratio: float = 0.0,
        lr_schedule: str = "constant",
        max_grad_norm: float = 1.0,
        val_temperature: float = 0.0,
        val_num_samples: int = 1,
        val_max_new_tokens: int | None = None,
        logprob_chunk_size: int = 1024,
        sampling_seed: int | None = None,
        fast_generation: bool = True,
        ref_quantization: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self._check_config()
        loaded = load_policy(model, dtype=dtype, gradient_checkpointing=gradient_checkpointing)
        self.policy, self.tokenizer = loaded.model, loaded.tokenizer
        self.ref_model = self._build_reference() if beta != 0.0 else None
        self.reward_weights = dict(rewards or {"correct": 1.0})
        self.reward_fns = {name: resolve_reward(name) for name in self.reward_weights}
        self.sampling = SamplingConfig(max_new_tokens, temperature, top_p, top_k, min_p, tuple(stop_strings or ()))
        self.val_sampling = SamplingConfig(val_max_new_tokens or max_new_tokens, val_temperature, top_p, top_k, min_p,
                                           tuple(stop_strings or ()))
        self.engine = self.build_engine(self.sampling)
        self.val_engine = self.build_engine(self.val_sampling)
        self._warned: set[str] = set()
        self.total_tokens = 0
        self.val_accuracy_by_group: GroupedAccuracy | None = None

    # ------------------------------------------------------------------ configuration
    def _check_config(self) -> None:
        h = self.hparams
        checks = [
            (h.num_generations >= 2, f"model.num_generations must be >= 2 (got {h.num_generations}): group advantages need a group"),
            (h.loss_type in obj.LOSS_TYPES, f"model.loss_type={h.loss_type!r}: choose one of {obj.LOSS_TYPES}"),
            (h.scale_rewards in obj.REWARD_SCALES, f"model.scale_rewards={h.scale_rewards!r}: choose one of {obj.REWARD_SCALES}"),
            (h.num_iterations >= 1, f"model.num_iterations must be >= 1 (got {h.num_iterations})"),
            (h.long_prompt in LONG_PROMPT_POLICIES, f"model.long_prompt={h.long_prompt!r}: choose 'truncate' or 'error'"),
            (h.prompt_format in PROMPT_FORMATS, f"model.prompt_format={h.prompt_format!r}: choose auto, chat or plain"),
            (h.val_num_samples >= 1, "model.val_num_samples must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_ref_quantization(h.ref_quantization)

    def _build_reference(self) -> torch.nn.Module:
        """A frozen copy of the initial policy for the KL term."""
        if self.hparams.ref_quantization is not None:
            return build_reference(self.policy, self.hparams.ref_quantization)
        ref = load_policy(self.hparams.model, dtype=self.hparams.dtype).model
        ref.load_state_dict(self.policy.state_dict())
        ref.requires_grad_(False).eval()
        return ref

    def build_engine(self, sampling: SamplingConfig) -> RolloutEngine:
        """The rollout engine (HRPO returns its latent-mixing engine)."""
        if self.hparams.fast_generation and torch.cuda.is_available():
            # the module is still on CPU here; the engine takes the static path once prompts are on CUDA
            return StaticCacheRolloutEngine(self.policy, self.tokenizer, sampling)
        return RolloutEngine(self.policy, self.tokenizer, sampling)

    def configure_optimizers(self):
        h = self.hparams
        optimizer = build_optimizer(self.optimizer_param_groups(), h.optimizer, lr=h.lr, weight_decay=h.weight_decay)
        total = self._total_optimizer_steps()
        scheduler = build_scheduler(optimizer, h.lr_schedule, total, h.warmup_steps, h.warmup_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_param_groups(self) -> list[dict]:
        """Trainable parameter groups (HRPO adds its gate with its own learning rates)."""
        return [{"params": [p for p in self.policy.parameters() if p.requires_grad]}]

    def _total_optimizer_steps(self) -> int:
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return 1
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        try:
            return max(int(trainer.estimated_stepping_batches), 1)
        except Exception:  # noqa: BLE001 - no dataloader yet
            return 1

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        batch = getattr(dm, "batch_size", None)
        if batch is not None:
            rows = batch * self.hparams.num_generations
            for name in ("minibatch_size", "micro_batch_size"):
                size = getattr(self.hparams, name)
                if size is not None and (size < 1 or rows % size):
                    raise ValueError(
                        f"model.{name}={size} must divide the rollout batch data.batch_size x num_generations = {rows}"
                    )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Global RNG states and the token counter, so a resumed run draws what the uninterrupted one
        would have (the rollout generator is re-seeded from the step anyway)."""
        checkpoint["lit_reason"] = {"rng_states": collect_rng_states(), "total_tokens": self.total_tokens}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lit_reason") or {}
        if "rng_states" in state:
            set_rng_states(state["rng_states"])
        self.total_tokens = int(state.get("total_tokens", self.total_tokens))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        groups = dm.metric_groups() if dm is not None and hasattr(dm, "metric_groups") else []
        if groups and self.val_accuracy_by_group is None:
            self.val_accuracy_by_group = GroupedAccuracy(groups)

    # ------------------------------------------------------------------ rollout
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def encode_prompt(self, prompt: Any, max_length: int | None = None) -> list[int]:
        """Token ids of one prompt: chat template (per ``prompt_format``) and at most ``max_length``
        tokens (default ``max_prompt_length``); a long prompt loses the start of its user text,
        never the template (see lit_reason.prompts)."""
        h = self.hparams
        limit = h.max_prompt_length if max_length is None else max_length
        encoded = encode_prompt(self.tokenizer, prompt, h.prompt_format, limit, h.long_prompt)
        if encoded.truncated:
            self._warn_once("long_prompt", f"prompts longer than {limit} tokens lose the start of their user text")
        return encoded.ids

    def encode_prompts(self, prompts: Sequence[Any]) -> tuple[Tensor, Tensor]:
        """Left-padded ``(ids, mask)`` of the prompts."""
        rows = [self.encode_prompt(prompt) for prompt in prompts]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long, device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=self.device)
        return ids, mask

    def sampling_generator(self, salt: int = 0) -> torch.Generator:
        base = self.hparams.sampling_seed if self.hparams.sampling_seed is not None else torch.initial_seed() % (2**31)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(hash((int(base), int(self.global_step), int(self.global_rank), salt)) % (2**63))
        return gen

    @torch.no_grad()
    def generate(self, problems: Sequence[Any], engine: RolloutEngine | None = None, repeats: int | None = None,
                 generator: torch.Generator | None = None) -> Rollout:
        """``repeats`` completions for each problem (default G), problem-major order."""
        engine = engine or self.engine
        repeats = self.hparams.num_generations if repeats is None else repeats
        ids, mask = self.encode_prompts([p.prompt for p in problems])
        was_training = self.policy.training
        self.policy.eval()
        try:
            return engine.generate(ids.repeat_interleave(repeats, 0), mask.repeat_interleave(repeats, 0), generator)
        finally:
            self.policy.train(was_training)

    # ------------------------------------------------------------------ forward passes
    def policy_logits(self, model: torch.nn.Module, rollout: Rollout, need_hidden: bool = False) -> tuple[Tensor, Tensor | None]:
        """Logits ``[B, T, V]`` (divided by the sampling temperature) that scored each completion
        token, and optionally the final hidden states ``[B, T, H]`` at the same positions."""
        ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)
        mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)
        t = rollout.completion_ids.shape[1]
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False,
                    logits_to_keep=t + 1, output_hidden_states=need_hidden)
        logits = out.logits[:, :-1]
        temperature = self.hparams.temperature or 1.0
        if temperature != 1.0:
            logits = logits / temperature
        hidden = out.hidden_states[-1][:, -t - 1 : -1] if need_hidden else None
        return logits, hidden

    def micro_batches(self, rows: int) -> list[slice]:
        size = self.hparams.micro_batch_size or rows
        return [slice(i, min(i + size, rows)) for i in range(0, rows, size)]

    @torch.no_grad()
    def old_policy_pass(self, rollout: Rollout, need_old: bool, need_ref: bool) -> dict[str, Tensor]:
        """One no-grad pass: old log-probs (for mu > 1 / minibatches) and reference log-probs.

        Subclasses add what they need from the same logits (Intuitor: self-certainty; NTHR:
        hidden states), which is why it runs per micro-batch and returns a dict.
        """
        out: dict[str, list[Tensor]] = {}
        chunk = self.hparams.logprob_chunk_size
        for s in self.micro_batches(len(rollout.texts)):
            part = rollout.select(s)
            if need_old:
                logits, _ = self.policy_logits(self.policy, part)
                out.setdefault("old_logps", []).append(obj.token_logps(logits, part.completion_ids, chunk))
            if need_ref:
                ref_logits, _ = self.reference_logits(part)
                out.setdefault("ref_logps", []).append(obj.token_logps(ref_logits, part.completion_ids, chunk))
        return {k: torch.cat(v) for k, v in out.items()}

    def reference_logits(self, rollout: Rollout) -> tuple[Tensor, Tensor | None]:
        """The reference model scores the plain token ids (HRPO keeps this too)."""
        return GRPO.policy_logits(self, self.ref_model, rollout)

    # ------------------------------------------------------------------ rewards and weights
    def compute_rewards(self, problems: Sequence[Any], rollout: Rollout, scores: list[float],
                        old: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``[B]`` rewards (NaN = abstained) and their metrics. Intuitor overrides this."""
        total, per_source, errors = compute_rewards(self.reward_fns, self.reward_weights, list(problems), rollout.texts, scores)
        for name, message in errors.items():
            self._warn_once(f"reward:{name}", f"reward {name!r} raised ({message}); counted as 0 for that completion")
        metrics = {}
        for name, values in per_source.items():
            metrics[f"rewards/{name}/mean"] = float(torch.nanmean(values)) if not torch.isnan(values).all() else 0.0
            metrics[f"rewards/{name}/std"] = float(values[~torch.isnan(values)].std()) if (~torch.isnan(values)).sum() > 1 else 0.0
            metrics[f"rewards/{name}/errors"] = float(name in errors)
        return total.to(self.device), metrics

    def compute_advantages(self, rewards: Tensor, old: dict[str, Tensor]) -> Tensor:
        """``[B]`` advantages from the summed rewards. Intuitor overrides this to normalise each
        reward source within its group before summing."""
        return obj.group_advantages(rewards, self.hparams.num_generations, self.hparams.scale_rewards)

    def token_weights(self, rollout: Rollout, advantages: Tensor, old: dict[str, Tensor]) -> Tensor | None:
        """Per-token loss weights; None means 1 everywhere. NTHR overrides this."""
        return None

    def needs_old_pass(self) -> bool:
        return self.hparams.num_iterations > 1 or (self.hparams.minibatch_size is not None)

    # ------------------------------------------------------------------ the step
    def training_step(self, batch: list[Any], batch_idx: int) -> dict[str, Any]:
        h = self.hparams
        G = h.num_generations
        problems = [p for p in batch for _ in range(G)]

        # 1. rollout
        rollout = self.generate(batch, generator=self.sampling_generator())
        # 2. reward
        scores = [float(p.score(t)) for p, t in zip(problems, rollout.texts)]
        need_old = self.needs_old_pass()
        old = self.old_policy_pass(rollout, need_old=need_old, need_ref=self.ref_model is not None)
        rewards, reward_metrics = self.compute_rewards(problems, rollout, scores, old)
        # 3. advantage
        advantages = self.compute_advantages(rewards, old)
        mask = rollout.completion_mask.float()
        if h.mask_truncated_completions:
            mask = mask * (~rollout.truncated).float()[:, None]
        # 4. token weights
        weights = self.token_weights(rollout, advantages, old)
        # 5. update: mu passes, one optimizer step per minibatch
        step_metrics = self.update(rollout, advantages, mask, old, weights)
        # 6. log
        self.log_step(rollout, rewards, scores, advantages, step_metrics, reward_metrics)
        return {"rollout": rollout, "problems": problems, "rewards": rewards, "scores": scores,
                "advantages": advantages, "old": old}

    def _global_token_count(self, mask: Tensor) -> float:
        """Tokens of ``mask`` summed over ranks, divided by the world size (DDP averages grads)."""
        count = mask.sum().detach()
        if self.trainer.world_size > 1:
            count = self.trainer.strategy.reduce(count, reduce_op="sum") / self.trainer.world_size
        return max(float(count), 1.0)

    def update(self, rollout: Rollout, advantages: Tensor, mask: Tensor, old: dict[str, Tensor],
               weights: Tensor | None) -> dict[str, float]:
        h = self.hparams
        opt = self.optimizers()
        sched = self.lr_schedulers()
        rows = len(rollout.texts)
        mb = h.minibatch_size or rows
        sums: dict[str, float] = {}
        count = 0
        for _ in range(h.num_iterations):
            for start in range(0, rows, mb):
                minibatch = slice(start, min(start + mb, rows))
                mb_mask = mask[minibatch]
                mb_tokens = float(mb_mask.sum().clamp_min(1))
                if h.loss_type == "dapo":
                    normalizer = self._global_token_count(mb_mask)
                else:
                    normalizer = obj.loss_normalizer(mb_mask, h.loss_type, h.max_new_tokens)
                opt.zero_grad()
                for micro in self.micro_batches(mb_mask.shape[0]):
                    rows_idx = slice(minibatch.start + micro.start, minibatch.start + micro.stop)
                    metrics = self._micro_step(rollout.select(rows_idx), advantages[rows_idx], mask[rows_idx], old,
                                               rows_idx, None if weights is None else weights[rows_idx], normalizer, mb_tokens)
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                if h.max_grad_norm and h.max_grad_norm > 0:
                    grad_norm = self._grad_norm()
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm * len(self.micro_batches(mb_mask.shape[0]))
                    self.clip_gradients(opt, gradient_clip_val=h.max_grad_norm, gradient_clip_algorithm="norm")
                opt.step()
                if sched is not None:
                    sched.step()
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _grad_norm(self) -> float:
        norms = [p.grad.detach().float().norm() for p in self.parameters() if p.grad is not None]
        return float(torch.stack(norms).norm()) if norms else 0.0

    def _micro_step(self, part: Rollout, advantages: Tensor, mask: Tensor, old: dict[str, Tensor], rows: slice,
                    weights: Tensor | None, normalizer: float, minibatch_tokens: float) -> dict[str, float]:
        h = self.hparams
        logits, _ = self.policy_logits(self.policy, part)
        logps = obj.token_logps(logits, part.completion_ids, h.logprob_chunk_size)
        old_logps = old["old_logps"][rows] if "old_logps" in old else logps.detach()
        ref_logps = old["ref_logps"][rows] if "ref_logps" in old else None
        loss, metrics = obj.policy_loss(
            logps, old_logps, advantages, mask, loss_type=h.loss_type, eps_low=h.eps_low, eps_high=h.eps_high,
            ref_logps=ref_logps, beta=h.beta, token_weights=weights, max_completion_length=h.max_new_tokens,
            normalizer=normalizer,
        )
        entropy_grad = h.entropy_coef != 0.0
        with torch.set_grad_enabled(entropy_grad):
            # only where the mask counts: padding after each completion's end is never computed
            ent = obj.token_entropy(logits if entropy_grad else logits.detach(), h.logprob_chunk_size, mask=mask)
        mean_entropy = (ent * mask).sum() / mask.sum().clamp_min(1)
        if entropy_grad:
            # token-mean entropy over the whole minibatch, split across its micro-batches
            loss = loss - h.entropy_coef * (ent * mask).sum() / minibatch_tokens
        self.manual_backward(loss)
        out = {k: float(v) for k, v in metrics.items()}
        out["loss"] = float(loss.detach())
        out["entropy"] = float(mean_entropy.detach())
        return out

    def log_step(self, rollout: Rollout, rewards: Tensor, scores: list[float], advantages: Tensor,
                 step_metrics: dict[str, float], reward_metrics: dict[str, float]) -> None:
        G = self.hparams.num_generations
        valid = ~torch.isnan(rewards)
        grouped = rewards.reshape(-1, G)
        group_std = torch.stack([g[~torch.isnan(g)].std() if (~torch.isnan(g)).sum() > 1 else g.new_zeros(())
                                 for g in grouped])
        lengths = rollout.lengths.float()
        n_tokens = rollout.num_tokens
        self.total_tokens += n_tokens
        metrics = {
            "reward_std": float(group_std.mean()),
            "frac_reward_zero_std": float(obj.zero_std_groups(rewards, G).float().mean()),
            "completions/mean_length": float(lengths.mean()),
            "completions/min_length": float(lengths.min()),
            "completions/max_length": float(lengths.max()),
            "completions/clipped_ratio": float(rollout.truncated.float().mean()),
            "num_tokens": float(self.total_tokens),
            "rollout/tokens_per_s": n_tokens / max(rollout.seconds, 1e-9),
            "lr": float(self.optimizers().param_groups[0]["lr"]),
            **reward_metrics,
            **step_metrics,
        }
        bs = len(rollout.texts)
        self.log_dict(metrics, batch_size=bs, sync_dist=self.trainer.world_size > 1)
        self.log("reward", float(rewards[valid].mean()) if valid.any() else 0.0, prog_bar=True, batch_size=bs,
                 sync_dist=self.trainer.world_size > 1)
        self.log("accuracy", sum(s >= 1.0 for s in scores) / max(len(scores), 1), prog_bar=True, batch_size=bs,
                 sync_dist=self.trainer.world_size > 1)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: list[Any], prefix: str) -> dict[str, Any]:
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
