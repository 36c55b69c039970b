"""GRPO as a LightningModule: the whole step visible in :meth:`GRPO.training_step`.

    rollout step -> rewards -> group advantages -> token weights -> mu x minibatch updates -> log

Each variant overrides one step: Intuitor the reward (:meth:`compute_rewards`), NTHR the token
weights (:meth:`token_weights`), HRPO how the next input embedding is formed (:meth:`build_engine`
and :meth:`policy_logits`). How the batch becomes a scored rollout is the rollout step's
(:mod:`lit_reason.rollout_step`); the sampling and forward passes are :class:`PolicyPasses`';
validation is :class:`Evaluation`'s; the math lives in :mod:`lit_reason.algorithms`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from lit_reason.algorithms import objectives as obj
from lit_reason.algorithms.advantages import estimate_advantages
from lit_reason.models.lora import LoraSettings, check_lora_precision, load_lora_policy, lora_hparams
from lit_reason.models.policy import load_policy
from lit_reason.modules.checkpoint_state import CheckpointState
from lit_reason.modules.divergence import DivergenceGuard, DivergenceSettings
from lit_reason.modules.evaluation import Evaluation
from lit_reason.modules.grpo_config import check_batch_sizes, check_options, schedule_length
from lit_reason.modules.resume_config import follow_config_on_resume
from lit_reason.rollout import Rollout, SamplingConfig
from lit_reason.rollout.correction import RolloutCorrection, correct_rollout
from lit_reason.rollout.vllm_engine import VLLMOptions
from lit_reason.rollout_step import DynamicSampling, RolloutStep, SampleNow
from lit_reason.rollout_step.episodes import EpisodeOptions, episode_step
from lit_reason.rollout_step.async_rollouts import AsyncRollouts, AsyncRolloutStep
from lit_reason.rollout_step.metrics import scored_rollout_metrics
from lit_reason.tasks.metrics import GroupedAccuracy
from lit_reason.tasks.rewards import ScoredCompletions, build_reward_sources, score_sources, source_metrics
from lit_reason.utils.config_dataclass import config_dict, parse_config
from lit_reason.utils.optim import build_optimizer, build_scheduler


class GRPO(CheckpointState, Evaluation):
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
        rewards: reward source -> weight; sources are names in ``lit_reason.tasks.rewards.REWARD_FUNCTIONS``
            or ``package.module:function``. Weight 0 logs a source without training on it.
        scale_rewards: ``group`` | ``batch`` | ``none`` (advantage normalisation).
        loss_type: ``grpo`` | ``bnpo`` | ``dr_grpo`` | ``dapo`` (token aggregation).
        eps_low, eps_high: clipping range of the ratio (eps_high defaults to eps_low).
        beta: weight of the k3 KL to a frozen copy of the initial policy (no copy is made when 0).
        num_iterations: mu, optimisation passes over one rollout (old log-probs stored once).
        minibatch_size: completions per optimizer step (default: the whole rollout). A rollout takes
            num_iterations x minibatches optimizer steps; ``trainer.max_steps`` and the LR schedule
            count optimizer steps (Lightning's ``global_step``), not rollouts (docs/lr_schedule.md).
        micro_batch_size: completions per forward/backward inside a minibatch (memory knob).
        mask_truncated_completions: drop completions that hit ``max_new_tokens`` from the loss.
        entropy_coef: weight of an entropy bonus (0 = off; entropy is always logged).
        lr, weight_decay, optimizer, warmup_steps, warmup_ratio, lr_schedule: see lit_reason.utils.optim.
        max_grad_norm: gradient clipping by global norm (0 = off).
        val_temperature, val_num_samples, val_max_new_tokens: evaluation sampling (greedy by default).
        logprob_chunk_size: positions per float32 chunk when turning logits into log-probs.
        chunked_lm_head: compute log-probs, entropy (and Intuitor's self-certainty) from the final
            hidden states and the LM head in chunks recomputed in backward (lit_reason.algorithms.lm_head): no
            ``[B, T, V]`` logits. False: the model's full logits (the reference path).
        cast_lm_head_to_fp32: compute the head's logits in float32 (from float32 casts of the hidden
            states and of each block of the head weight) instead of the model dtype.
        sampling_seed: base seed of the sampling generator (default: the global seed); rollout i is
            drawn from a generator seeded by (seed, global step, rank), so resumed runs re-draw the
            same. (Not called ``seed``: a DataModule's ``seed`` would clash in the loggers' hparams.)
        fast_generation: on CUDA, sample with the static-cache, CUDA-graph engine
            (:mod:`lit_reason.rollout.static_cache`); the CPU path is the plain engine either way.
        ref_quantization: store the frozen reference (beta != 0) in ``8bit`` or ``nf4`` weights via
            bitsandbytes (see lit_reason.models.reference); null keeps it in ``dtype``.
        lora: LoRA adapters via peft, ``{r, alpha, dropout, target_modules, load_in_4bit}``
            (see lit_reason.models.lora): only they train, and the KL reference is the base with the
            adapters off (no copy). null trains every weight.
        advantage_estimator: ``grpo`` (group-normalised, by ``scale_rewards``) | ``rloo``
            (leave-one-out baseline; ``scale_rewards`` none or batch) | ``reinforce_pp`` (batch
            whitening) | ``reinforce_pp_baseline`` (group baseline, then batch whitening); see
            lit_reason.algorithms.advantages. The REINFORCE++ pair ignores ``scale_rewards``.
        importance_sampling_level: ``token`` (GRPO) | ``sequence`` (GSPO: one ratio per completion,
            the geometric mean of its token ratios, clipped per sequence; pair it with
            ``loss_type: grpo`` as the GSPO paper does).
        top_entropy_quantile: train the policy term only on the tokens whose entropy is in this top
            share of the micro-batch's (all ranks'); 1.0 = every token (paper: 0.2). The KL term
            and the entropy bonus still cover every token.
        dynamic_sampling: DAPO dynamic sampling: drop groups whose rewards all agree and refill the
            batch with rollouts of extra problems until it holds ``data.batch_size`` informative
            groups (lit_reason.rollout_step.dynamic_sampling, whose docstring explains why resume and DDP
            stay exact).
        max_resample_batches: cap on the extra rollout batches (of ``data.batch_size`` problems) per
            step; a batch still short then is completed with uninformative groups masked out.
        rollout_engine: ``builtin`` (the KV-cache engines of lit_reason.rollout) | ``vllm``
            (colocated vLLM, weights synced from the policy; see docs/vllm.md).
        vllm: vLLM options ``{gpu_memory_utilization, enable_sleep_mode, max_model_len,
            enforce_eager, tensor_parallel_size, sync_every, ...}`` (lit_reason.rollout.vllm_engine).
        rollout_correction: truncated importance sampling on pi_trainer_old / pi_sampler,
            ``{level: token|sequence, mode: truncate|mask, cap, floor}`` (lit_reason.rollout.correction),
            for any engine; null = off.
        episodes: multi-turn episodes against an environment ``{environment, environment_args,
            max_turns, max_episode_tokens, reward}`` (lit_reason.rollout_step.episodes,
            docs/episodes.md); null = one completion per rollout row.
        divergence: ``{max_bad_steps, collapse_steps, weight_growth}``: steps with a non-finite loss,
            gradient or reward are skipped, ``max_bad_steps`` in a row stop the run (exit 3); see
            lit_reason.modules.divergence and docs/fault_tolerance.md. null = the defaults.
        on_reward_error, reward_timeout, reward_ranges: a failing reward ``stop``s the run in one line
            before the update or counts ``zero``; seconds per batch; ``{name: [low, high]}`` (lit_reason.tasks.reward_calls).
        async_rollouts: a sampler process generating up to ``max_staleness`` versions ahead (docs/async_rollouts.md).
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
        chunked_lm_head: bool = True,
        cast_lm_head_to_fp32: bool = False,
        sampling_seed: int | None = None,
        fast_generation: bool = True,
        ref_quantization: str | None = None,
        lora: LoraSettings | None = None,
        advantage_estimator: str = "grpo",
        importance_sampling_level: str = "token",
        top_entropy_quantile: float = 1.0,
        dynamic_sampling: bool = False,
        max_resample_batches: int = 4,
        rollout_engine: str = "builtin",
        vllm: VLLMOptions | None = None,
        rollout_correction: RolloutCorrection | None = None,
        episodes: EpisodeOptions | None = None,
        divergence: DivergenceSettings | None = None,
        on_reward_error: str = "stop",
        reward_timeout: float | None = 120.0,
        reward_ranges: dict[str, list[float]] | None = None,
        async_rollouts: AsyncRollouts | None = None,
    ) -> None:
        super().__init__()
        lora = lora_hparams(lora)  # a plain dict in hparams and checkpoints
        vllm = config_dict(VLLMOptions, vllm, "model.vllm")
        rollout_correction = config_dict(RolloutCorrection, rollout_correction, "model.rollout_correction")
        episodes = config_dict(EpisodeOptions, episodes, "model.episodes")
        divergence = config_dict(DivergenceSettings, divergence, "model.divergence")
        async_rollouts = config_dict(AsyncRollouts, async_rollouts, "model.async_rollouts")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self._check_config()
        self.lora = LoraSettings.parse(lora)
        if self.lora is not None:
            loaded = load_lora_policy(model, dtype, gradient_checkpointing, self.lora)
        else:
            loaded = load_policy(model, dtype=dtype, gradient_checkpointing=gradient_checkpointing)
        self.policy, self.tokenizer = loaded.model, loaded.tokenizer
        self.rollout_correction = parse_config(RolloutCorrection, rollout_correction, "model.rollout_correction")
        self.ref_model = self._build_reference() if beta != 0.0 else None
        self.reward_weights = dict(rewards or {"correct": 1.0})
        self.reward_fns = build_reward_sources(self.reward_weights, on_reward_error, reward_timeout, reward_ranges)
        self.sampling = SamplingConfig(max_new_tokens, temperature, top_p, top_k, min_p, tuple(stop_strings or ()))
        self.val_sampling = SamplingConfig(val_max_new_tokens or max_new_tokens, val_temperature, top_p, top_k, min_p,
                                           tuple(stop_strings or ()))
        self.engine = self.build_engine(self.sampling)
        self.val_engine = self.build_engine(self.val_sampling)
        self.rollout_step = self.build_rollout_step()
        self.divergence = DivergenceGuard(parse_config(DivergenceSettings, divergence, "model.divergence")
                                          or DivergenceSettings())
        self._warned: set[str] = set()
        self.total_tokens = 0
        self.val_accuracy_by_group: GroupedAccuracy | None = None

    # ------------------------------------------------------------------ parts
    def build_rollout_step(self) -> RolloutStep:
        """How a batch becomes a scored rollout: replace this (or ``self.rollout_step``) to sample
        another way (episodes, a rollout queue) with the step below unchanged."""
        if self.hparams.get("episodes") is not None:
            return episode_step(self.hparams.episodes, self.hparams.dynamic_sampling, self.hparams.max_resample_batches)
        if self.hparams.get("async_rollouts") is not None:
            return AsyncRolloutStep(parse_config(AsyncRollouts, self.hparams.async_rollouts, "model.async_rollouts"))
        if self.hparams.dynamic_sampling:
            return DynamicSampling(self.hparams.max_resample_batches)
        return SampleNow()

    @property
    def dynamic_sampling_totals(self) -> dict[str, int]:
        """Groups generated and kept by dynamic sampling over the run (checkpointed; empty counts when off)."""
        return getattr(self.rollout_step, "totals", {"generated_groups": 0, "kept_groups": 0})

    def _check_config(self) -> None:
        """Every setting checked before anything loads (variants add theirs, then call this)."""
        check_options(self.hparams, type(self).__name__, own_engine=type(self).build_engine is not GRPO.build_engine)

    def configure_optimizers(self):
        h = self.hparams
        optimizer = build_optimizer(self.optimizer_param_groups(), h.optimizer, lr=h.lr, weight_decay=h.weight_decay)
        total = schedule_length(getattr(self, "_trainer", None), h, self._warn_once)
        scheduler = build_scheduler(optimizer, h.lr_schedule, total, h.warmup_steps, h.warmup_ratio)
        follow_config_on_resume(optimizer)  # a resumed run keeps the config's lr, not the saved one
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_param_groups(self) -> list[dict]:
        """Trainable parameter groups (HRPO adds its gate with its own learning rates)."""
        return [{"params": [p for p in self.policy.parameters() if p.requires_grad]}]

    def on_fit_start(self) -> None:
        check_batch_sizes(self.hparams, getattr(getattr(self.trainer, "datamodule", None), "batch_size", None))
        self.rollout_step.on_fit_start(self)

    def on_train_start(self) -> None:
        self.rollout_step.on_train_start(self)

    def setup(self, stage: str) -> None:
        self._setup_strategy()
        if self.lora is not None and self._trainer is not None:
            check_lora_precision(self.lora, self.ref_model is not None, self.trainer.precision_plugin)
        if stage == "fit" and self._trainer is not None:
            self.rollout_step.setup(self)
        self.setup_metric_groups()

    def teardown(self, stage: str) -> None:
        self.rollout_step.teardown(self)

    # ------------------------------------------------------------------ rewards and weights
    def compute_rewards(self, problems: Sequence[Any], rollout: Rollout, scores: Sequence[float],
                        old: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``[B]`` rewards (NaN = abstained) and their metrics. Intuitor overrides this. ``scores``:
        the rollout step's ScoredCompletions (the sources already called), or plain scores."""
        scored = self.reward_sources(problems, rollout, scores)
        return scored.total(self.reward_weights).to(self.device), source_metrics(scored.per_source, scored.errors())

    def reward_sources(self, problems: Sequence[Any], rollout: Rollout, scores: Sequence[float]) -> ScoredCompletions:
        """What the reward sources said about each completion: ``scores`` itself when the rollout
        step scored them (ScoredCompletions), else the sources called now. A source that raised is
        named once in a warning (the row counts 0)."""
        if not isinstance(scores, ScoredCompletions):
            scores = score_sources(self.reward_fns, list(problems), rollout.texts, list(scores))
        for name, message in scores.errors().items():
            self._warn_once(f"reward:{name}", f"reward {name!r} raised ({message}); counted as 0 for that completion")
        return scores

    def compute_advantages(self, rewards: Tensor, old: dict[str, Tensor]) -> Tensor:
        """``[B]`` advantages from the summed rewards. Intuitor overrides this to normalise each
        reward source within its group before summing."""
        h = self.hparams
        return estimate_advantages(rewards, h.num_generations, h.advantage_estimator, h.scale_rewards)

    def token_weights(self, rollout: Rollout, advantages: Tensor, old: dict[str, Tensor]) -> Tensor | None:
        """Per-token loss weights; None means 1 everywhere. NTHR overrides this."""
        return None

    def correct_rollout_mismatch(self, rollout: Rollout, mask: Tensor, old: dict[str, Tensor],
                                 weights: Tensor | None) -> tuple[Tensor | None, dict[str, float]]:
        """``model.rollout_correction``: truncated-IS weights pi_trainer_old / pi_sampler, multiplied
        into the token weights (NTHR's included); identity when off."""
        if self.rollout_correction is None or "old_logps" not in old:
            return weights, {}
        correction, metrics = correct_rollout(old["old_logps"], rollout.logprobs, mask, self.rollout_correction)
        correction = correction.to(old["old_logps"].dtype)
        return (correction if weights is None else weights * correction), metrics

    def needs_old_pass(self) -> bool:
        return self.hparams.num_iterations > 1 or (self.hparams.minibatch_size is not None)

    # ------------------------------------------------------------------ the step
    def training_step(self, batch: list[Any], batch_idx: int) -> dict[str, Any]:
        h = self.hparams

        # 1. rollout: the batch sampled and scored by the rollout step (dynamic sampling refills it)
        step = self.rollout_step(self, batch)
        rollout, problems = step.rollout, step.rows
        # 2. reward (each completion was scored once, by the rollout step)
        need_old = self.needs_old_pass() or self.rollout_correction is not None
        old = self.old_policy_pass(rollout, need_old=need_old, need_ref=self.ref_model is not None)
        rewards, reward_metrics = self.compute_rewards(problems, rollout, step.trained_scores, old)
        if step.trained_rows is not None:  # padding groups: out of the batch statistics and the logged reward
            rewards = rewards.masked_fill(~step.trained_rows.to(rewards.device, torch.bool), float("nan"))
        self.divergence.rewards = rewards  # an infinite reward skips this rollout's optimizer steps
        # 3. advantage
        advantages = self.compute_advantages(rewards, old)
        mask = rollout.completion_mask.float()
        if h.mask_truncated_completions:
            mask = mask * (~rollout.truncated).float()[:, None]
        if step.trained_rows is not None:  # e.g. dynamic sampling's padding groups stay out of the loss
            mask = mask * step.trained_rows.to(mask.dtype)[:, None]
        # 4. token weights
        weights = self.token_weights(rollout, advantages, old)
        weights, correction_metrics = self.correct_rollout_mismatch(rollout, mask, old, weights)
        # 5. update: mu passes, one optimizer step per minibatch
        step_metrics = self.update(rollout, advantages, mask, old, weights)
        step_metrics.update(correction_metrics)
        # 6. log
        self.log_step(rollout, rewards, step.scored.scores, advantages, {**step_metrics, **step.metrics}, reward_metrics)
        return {"rollout": rollout, "problems": problems, "rewards": rewards, "scores": step.scored.scores,
                "advantages": advantages, "old": old}

    #: Intuitor's reward needs the no-grad pass (self-certainty); dynamic sampling reads it per draw
    rewards_need_old_pass = False

    def update(self, rollout: Rollout, advantages: Tensor, mask: Tensor, old: dict[str, Tensor],
               weights: Tensor | None) -> dict[str, float]:
        h = self.hparams
        opt = self.optimizers()
        sched = self.lr_schedulers()
        rows = len(rollout.texts)
        mb = h.minibatch_size or rows
        sums: dict[str, float] = {}
        count = 0
        used_lrs: list[float] = []  # read before each scheduler.step(): the LR that step applied
        for _ in range(h.num_iterations):
            for start in range(0, rows, mb):
                minibatch = slice(start, min(start + mb, rows))
                mb_mask = mask[minibatch]
                mb_tokens = float(mb_mask.sum().clamp_min(1))
                if h.loss_type in ("dapo", "cispo"):
                    normalizer = self._global_token_count(mb_mask)
                else:
                    normalizer = obj.loss_normalizer(mb_mask, h.loss_type, h.max_new_tokens)
                opt.zero_grad()
                losses = []
                for micro in self.micro_batches(mb_mask.shape[0]):
                    rows_idx = slice(minibatch.start + micro.start, minibatch.start + micro.stop)
                    metrics = self._micro_step(rollout.select(rows_idx), advantages[rows_idx], mask[rows_idx], old,
                                               rows_idx, None if weights is None else weights[rows_idx], normalizer, mb_tokens)
                    losses.append(metrics["loss"])
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                grad_norm = self._grad_norm()
                if h.max_grad_norm and h.max_grad_norm > 0:
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm * len(self.micro_batches(mb_mask.shape[0]))
                    self.clip_grad_norm(opt, h.max_grad_norm)
                if not self.divergence.allow_step(self, losses, grad_norm):
                    opt.zero_grad(set_to_none=True)  # skipped: no gradient reaches the optimizer; the step still counts
                used_lrs.append(float(opt.param_groups[0]["lr"]))
                opt.step()
                self.divergence.after_step(self, grad_norm, advantages[minibatch])
                if sched is not None:
                    sched.step()
        out = {k: v / max(count, 1) for k, v in sums.items()}
        out["skipped_steps"] = float(self.divergence.skipped_total)
        out["lr"] = sum(used_lrs) / max(len(used_lrs), 1)  # mean over this rollout's optimizer steps
        return out

    def _micro_step(self, part: Rollout, advantages: Tensor, mask: Tensor, old: dict[str, Tensor], rows: slice,
                    weights: Tensor | None, normalizer: float, minibatch_tokens: float) -> dict[str, float]:
        h = self.hparams
        entropy_grad = h.entropy_coef != 0.0
        scores = self.completion_scores(self.policy, part, entropy=True, entropy_grad=entropy_grad)
        logps = scores.logps
        old_logps = old["old_logps"][rows] if "old_logps" in old else logps.detach()
        ref_logps = old["ref_logps"][rows] if "ref_logps" in old else None
        # computed only where completion_mask counts: padding after each completion's end never is
        ent = scores.entropy if entropy_grad else scores.entropy.detach()
        mean_entropy = (ent * mask).sum() / mask.sum().clamp_min(1)
        weights, selection_metrics = self.entropy_selected_weights(ent.detach(), mask, weights)
        loss, metrics = obj.policy_loss(
            logps, old_logps, advantages, mask, loss_type=h.loss_type, eps_low=h.eps_low, eps_high=h.eps_high,
            ref_logps=ref_logps, beta=h.beta, token_weights=weights, max_completion_length=h.max_new_tokens,
            normalizer=normalizer, importance_sampling_level=h.importance_sampling_level,
        )
        metrics.update(selection_metrics)
        if entropy_grad:
            # token-mean entropy over the whole minibatch, split across its micro-batches
            loss = loss - h.entropy_coef * (ent * mask).sum() / minibatch_tokens
        self.manual_backward(loss)
        out = {k: float(v) for k, v in metrics.items()}
        out["loss"] = float(loss.detach())
        out["entropy"] = float(mean_entropy.detach())
        return out

    def entropy_selected_weights(self, entropy: Tensor, mask: Tensor, weights: Tensor | None
                                 ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """``top_entropy_quantile`` < 1: the token weights times the high-entropy selection of this
        micro-batch (threshold over every rank's counted tokens, as the reference trainer gathers)."""
        q = self.hparams.top_entropy_quantile
        if q >= 1.0:
            return weights, {}
        pool = entropy[mask != 0].float()
        if self._trainer is not None and self.trainer.world_size > 1:
            sentinel = -1e9  # entropies are >= 0 (up to rounding), so this never collides
            padded = torch.full((mask.shape[0] * self.hparams.max_new_tokens,), sentinel, device=pool.device)
            padded[: pool.numel()] = pool
            gathered = self.all_gather(padded).reshape(-1)
            pool = gathered[gathered != sentinel]
        selected = obj.high_entropy_mask(entropy, mask, q, pool=pool).to(mask.dtype)
        frac = selected.sum() / (mask != 0).sum().clamp_min(1)
        return (selected if weights is None else weights * selected), {"entropy_selection/frac_tokens": frac}

    def log_step(self, rollout: Rollout, rewards: Tensor, scores: list[float], advantages: Tensor,
                 step_metrics: dict[str, float], reward_metrics: dict[str, float]) -> None:
        self.total_tokens += rollout.num_tokens
        metrics = {**scored_rollout_metrics(rollout, rewards, self.hparams.num_generations),
                   "num_tokens": float(self.total_tokens), **reward_metrics, **step_metrics}
        bs, sync = len(rollout.texts), self.trainer.world_size > 1
        valid = ~torch.isnan(rewards)
        self.log_dict(metrics, batch_size=bs, sync_dist=sync)
        self.log("reward", float(rewards[valid].mean()) if valid.any() else 0.0, prog_bar=True, batch_size=bs,
                 sync_dist=sync)
        self.log("accuracy", sum(s >= 1.0 for s in scores) / max(len(scores), 1), prog_bar=True, batch_size=bs,
                 sync_dist=sync)
