"""GRPO as a LightningModule: the whole step visible in :meth:`GRPO.training_step`.

    rollout -> scores/rewards -> group advantages -> token weights -> mu x minibatch updates -> log

Each variant overrides one step: Intuitor the reward (:meth:`compute_rewards`), NTHR the token
weights (:meth:`token_weights`), HRPO how the next input embedding is formed (:meth:`build_engine`
and :meth:`policy_logits`). The math lives in :mod:`lit_reason.objectives`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_reason import objectives as obj
from lit_reason.advantages import check_estimator, estimate_advantages
from lit_reason.config_dataclass import config_dict, parse_config
from lit_reason.dynamic_sampling import fill_informative_groups, refill_indices, step_metrics
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine
from lit_reason.lm_head import (CompletionScores, adapter_base, adapters_off, chunked_head_stats, final_hidden_states,
                                split_causal_lm)
from lit_reason.metrics import GroupedAccuracy, problem_groups
from lit_reason.modules.strategy_hooks import StrategyHooks
from lit_reason.optim import build_optimizer, build_scheduler, optimizer_steps_per_rollout, run_optimizer_steps
from lit_reason.policy import load_policy
from lit_reason.prompts import LONG_PROMPT_POLICIES, PROMPT_FORMATS, encode_prompt
from lit_reason.lora import AdaptersOff, LoraSettings, check_lora_precision, load_lora_policy, lora_hparams
from lit_reason.lora_checkpoint import can_slim, restore_base, slim_checkpoint, trained_keys
from lit_reason.reference import build_reference, check_ref_quantization
from lit_reason.rewards import ScoredCompletions, resolve_reward, score_sources
from lit_reason.rng import collect_rng_states, set_rng_states
from lit_reason.rollout import Rollout, RolloutEngine, SamplingConfig, positions_from_mask
from lit_reason.rollout.correction import RolloutCorrection, correct_rollout
from lit_reason.rollout.vllm_engine import ROLLOUT_ENGINES, VLLMOptions, build_vllm_session, VLLMRolloutEngine


class GRPO(StrategyHooks):
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
        minibatch_size: completions per optimizer step (default: the whole rollout). A rollout takes
            num_iterations x minibatches optimizer steps; ``trainer.max_steps`` and the LR schedule
            count optimizer steps (Lightning's ``global_step``), not rollouts (docs/lr_schedule.md).
        micro_batch_size: completions per forward/backward inside a minibatch (memory knob).
        mask_truncated_completions: drop completions that hit ``max_new_tokens`` from the loss.
        entropy_coef: weight of an entropy bonus (0 = off; entropy is always logged).
        lr, weight_decay, optimizer, warmup_steps, warmup_ratio, lr_schedule: see lit_reason.optim.
        max_grad_norm: gradient clipping by global norm (0 = off).
        val_temperature, val_num_samples, val_max_new_tokens: evaluation sampling (greedy by default).
        logprob_chunk_size: positions per float32 chunk when turning logits into log-probs.
        chunked_lm_head: compute log-probs, entropy (and Intuitor's self-certainty) from the final
            hidden states and the LM head in chunks recomputed in backward (lit_reason.lm_head): no
            ``[B, T, V]`` logits. False: the model's full logits (the reference path).
        cast_lm_head_to_fp32: compute the head's logits in float32 (from float32 casts of the hidden
            states and of each block of the head weight) instead of the model dtype.
        sampling_seed: base seed of the sampling generator (default: the global seed); rollout i is
            drawn from a generator seeded by (seed, global step, rank), so resumed runs re-draw the
            same. (Not called ``seed``: a DataModule's ``seed`` would clash in the loggers' hparams.)
        fast_generation: on CUDA, sample with the static-cache, CUDA-graph engine
            (:mod:`lit_reason.rollout.static_cache`); the CPU path is the plain engine either way.
        ref_quantization: store the frozen reference (beta != 0) in ``8bit`` or ``nf4`` weights via
            bitsandbytes (see lit_reason.reference); null keeps it in ``dtype``.
        lora: LoRA adapters via peft, ``{r, alpha, dropout, target_modules, load_in_4bit}``
            (see lit_reason.lora): only they train, and the KL reference is the base with the
            adapters off (no copy). null trains every weight.
        advantage_estimator: ``grpo`` (group-normalised, by ``scale_rewards``) | ``rloo``
            (leave-one-out baseline; ``scale_rewards`` none or batch) | ``reinforce_pp`` (batch
            whitening) | ``reinforce_pp_baseline`` (group baseline, then batch whitening); see
            lit_reason.advantages. The REINFORCE++ pair ignores ``scale_rewards``.
        importance_sampling_level: ``token`` (GRPO) | ``sequence`` (GSPO: one ratio per completion,
            the geometric mean of its token ratios, clipped per sequence; pair it with
            ``loss_type: grpo`` as the GSPO paper does).
        top_entropy_quantile: train the policy term only on the tokens whose entropy is in this top
            share of the micro-batch's (all ranks'); 1.0 = every token (paper: 0.2). The KL term
            and the entropy bonus still cover every token.
        dynamic_sampling: DAPO dynamic sampling: drop groups whose rewards all agree and refill the
            batch with rollouts of extra problems until it holds ``data.batch_size`` informative
            groups (lit_reason.dynamic_sampling, whose docstring explains why resume and DDP
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
    ) -> None:
        super().__init__()
        lora = lora_hparams(lora)  # a plain dict in hparams and checkpoints
        vllm = config_dict(VLLMOptions, vllm, "model.vllm")
        rollout_correction = config_dict(RolloutCorrection, rollout_correction, "model.rollout_correction")
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
        self.reward_fns = {name: resolve_reward(name) for name in self.reward_weights}
        self.sampling = SamplingConfig(max_new_tokens, temperature, top_p, top_k, min_p, tuple(stop_strings or ()))
        self.val_sampling = SamplingConfig(val_max_new_tokens or max_new_tokens, val_temperature, top_p, top_k, min_p,
                                           tuple(stop_strings or ()))
        self.engine = self.build_engine(self.sampling)
        self.val_engine = self.build_engine(self.val_sampling)
        self._warned: set[str] = set()
        self.total_tokens = 0
        self.val_accuracy_by_group: GroupedAccuracy | None = None
        self.dynamic_sampling_totals = {"generated_groups": 0, "kept_groups": 0}  # checkpointed
        self.dynamic_sampling_stats: dict[str, float] = {}  # the last step's (logged)
        self._scored: tuple[Rollout, ScoredCompletions] | None = None  # the step's rollout, scored once

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
            (h.logprob_chunk_size >= 1, f"model.logprob_chunk_size must be >= 1 (got {h.logprob_chunk_size})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_ref_quantization(h.ref_quantization)
        self._check_algorithm_options()
        self._check_rollout_engine()
        if h.ref_quantization is not None and h.get("lora") is not None:
            raise ValueError("model.ref_quantization has no effect with model.lora (the reference is the base with the "
                             "adapters off, no copy): unset ref_quantization; lora.load_in_4bit quantizes the base")

    def _check_algorithm_options(self) -> None:
        """GSPO / CISPO / estimators / token selection / dynamic sampling: one line per bad value."""
        h = self.hparams
        problem = check_estimator(h.advantage_estimator, h.scale_rewards)
        if problem is None and h.importance_sampling_level not in obj.IMPORTANCE_SAMPLING_LEVELS:
            problem = (f"model.importance_sampling_level={h.importance_sampling_level!r}: choose one of "
                       f"{obj.IMPORTANCE_SAMPLING_LEVELS} (sequence = GSPO)")
        if problem is None and h.loss_type == "cispo" and (h.eps_high is None or h.eps_high < 1.0):
            problem = (f"model.loss_type=cispo caps the importance weight at model.eps_high (got {h.eps_high}): "
                       "set eps_high >= 1, e.g. 5.0 as the reference trainer recommends")
        if problem is None and not 0.0 <= h.top_entropy_quantile <= 1.0:
            problem = f"model.top_entropy_quantile must be in [0, 1] (1 = every token; paper: 0.2), got {h.top_entropy_quantile}"
        if problem is None and h.max_resample_batches < 0:
            problem = f"model.max_resample_batches must be >= 0, got {h.max_resample_batches}"
        if problem is not None:
            raise ValueError(problem)

    def _check_rollout_engine(self) -> None:
        h = self.hparams
        engine = h.get("rollout_engine", "builtin")
        if engine not in ROLLOUT_ENGINES:
            raise ValueError(f"model.rollout_engine={engine!r}: choose one of {ROLLOUT_ENGINES}")
        if engine == "vllm" and type(self).build_engine is not GRPO.build_engine:
            raise ValueError(f"model.rollout_engine=vllm: {type(self).__name__} samples with its own engine "
                             "(vLLM cannot run it); set model.rollout_engine=builtin")

    def _optimizer_steps(self) -> int:
        """Optimizer steps so far (manual optimization counts each ``opt.step()``): when vLLM syncs."""
        return int(self.global_step) if self._trainer is not None else 0

    def _build_reference(self) -> torch.nn.Module:
        """A frozen copy of the initial policy for the KL term (with LoRA: the policy's own base,
        adapters off, no copy)."""
        if self.lora is not None:
            return AdaptersOff(self.policy)
        if self.hparams.ref_quantization is not None:
            return build_reference(self.policy, self.hparams.ref_quantization)
        ref = load_policy(self.hparams.model, dtype=self.hparams.dtype).model
        ref.load_state_dict(self.policy.state_dict())
        ref.requires_grad_(False).eval()
        return ref

    def build_engine(self, sampling: SamplingConfig) -> RolloutEngine:
        """The rollout engine (HRPO returns its latent-mixing engine). With ``rollout_engine: vllm``
        the train and validation engines share one colocated vLLM, checked here before training."""
        h = self.hparams
        if h.get("rollout_engine", "builtin") == "vllm":
            if getattr(self, "_vllm_session", None) is None:
                longest = max(h.max_new_tokens, h.val_max_new_tokens or 0)
                seed = h.sampling_seed if h.sampling_seed is not None else 0
                self._vllm_session = build_vllm_session(self.policy, self.tokenizer, h.get("vllm"), h.max_prompt_length,
                                                        longest, self._optimizer_steps, seed, self._wrapped_root)
            return VLLMRolloutEngine(self._vllm_session, self.tokenizer, sampling)
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
        """Length of the LR schedule: the optimizer steps this run will take, num_iterations x
        minibatches per rollout (``trainer.max_steps`` counts optimizer steps; see lit_reason.optim)."""
        trainer, h = getattr(self, "_trainer", None), self.hparams
        if trainer is None:
            return 1
        max_rollouts = float("inf")
        if trainer.max_epochs is not None and trainer.max_epochs != -1:
            _ = trainer.estimated_stepping_batches  # loads the train dataloader (Lightning's documented way)
            if trainer.num_training_batches != float("inf"):
                max_rollouts = trainer.num_training_batches * max(trainer.max_epochs, 1)
        rows = 0
        if h.minibatch_size:
            batch = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
            batch = batch or getattr(trainer.train_dataloader, "batch_size", None)
            if not batch:
                raise ValueError("model.minibatch_size needs the rollout size: use a DataModule with a batch_size")
            rows = batch * h.num_generations
        per_rollout = optimizer_steps_per_rollout(rows, h.num_iterations, h.minibatch_size)
        total = run_optimizer_steps(per_rollout, trainer.max_steps, max_rollouts)
        if total == float("inf"):
            if h.lr_schedule != "constant" or h.warmup_ratio:
                raise ValueError(f"model.lr_schedule={h.lr_schedule!r} (or warmup_ratio) needs a run length: "
                                 "set trainer.max_steps (optimizer steps) or trainer.max_epochs")
            return 1
        if 0 <= trainer.max_steps < total:
            self._warn_once("max_steps", f"trainer.max_steps={trainer.max_steps} counts optimizer steps and a rollout "
                            f"takes {per_rollout} (num_iterations x minibatches); the run stops after the rollout "
                            f"that reaches it, at {int(total)} steps: set a multiple of {per_rollout}")
        return max(int(total), 1)

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
        if self.hparams.dynamic_sampling:
            strategy = self.trainer.strategy
            stage = (getattr(strategy, "config", None) or {}).get("zero_optimization", {}).get("stage")
            if type(strategy).__name__.startswith(("FSDP", "ModelParallel")) or stage == 3:
                raise ValueError("model.dynamic_sampling needs full weights on every rank (DDP, DeepSpeed ZeRO-2): under "
                                 "FSDP / ZeRO-3 ranks generating different numbers of batches would wait on each other")

    def on_train_start(self) -> None:
        if self.hparams.dynamic_sampling:  # the train loader exists from here on
            self._check_refill_dataset()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._prepare_vllm()

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._prepare_vllm()

    def _prepare_vllm(self) -> None:
        """Start vLLM / push the weights before the step, outside the strategy's forward: under FSDP1
        the training and validation steps run inside the root unit's forward, where FSDP refuses to
        gather weights (the rollout's own prepare then finds vLLM up to date)."""
        session = getattr(self, "_vllm_session", None)
        if session is not None:
            session.prepare()

    def _check_refill_dataset(self) -> None:
        """Refills index the training dataset (see lit_reason.dynamic_sampling)."""
        dataset = self._refill_dataset()
        if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) < 1:
            raise ValueError("model.dynamic_sampling refills from the training dataset by index: it needs a non-empty "
                             "map-style dataset (every ProblemDataModule has one)")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Global RNG states and the token counter, so a resumed run draws what the uninterrupted one
        would have (the rollout generator is re-seeded from the step anyway)."""
        checkpoint["lit_reason"] = {"rng_states": collect_rng_states(), "total_tokens": self.total_tokens,
                                    "dynamic_sampling_totals": dict(self.dynamic_sampling_totals)}
        if self.lora is not None and "state_dict" in checkpoint and self._trainer is not None and \
                can_slim(self.hparams.model, self.trainer.strategy, self.lora.save_base):
            slim_checkpoint(checkpoint, trained_keys(self), self.hparams.model)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:  # a LoRA checkpoint without its base gets the live one back
            restore_base(checkpoint, self.state_dict(), self.hparams.model)
        state = checkpoint.get("lit_reason") or {}
        if "rng_states" in state:
            set_rng_states(state["rng_states"])
        self.dynamic_sampling_totals.update(state.get("dynamic_sampling_totals", {}))
        self.total_tokens = int(state.get("total_tokens", self.total_tokens))

    def setup(self, stage: str) -> None:
        self._setup_strategy()
        if self.lora is not None and self._trainer is not None:
            check_lora_precision(self.lora, self.ref_model is not None, self.trainer.precision_plugin)
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
    def model_inputs(self, model: torch.nn.Module, rollout: Rollout) -> dict[str, Tensor]:
        """Keyword inputs of the training forward over prompt + completion (HRPO: ``inputs_embeds``)."""
        ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)
        mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions_from_mask(mask)}

    def policy_logits(self, model: torch.nn.Module, rollout: Rollout, need_hidden: bool = False) -> tuple[Tensor, Tensor | None]:
        """Logits ``[B, T, V]`` (divided by the sampling temperature) that scored each completion
        token, and optionally the final hidden states ``[B, T, H]`` at the same positions."""
        return self.logits_from_inputs(model, GRPO.model_inputs(self, model, rollout), rollout.completion_ids.shape[1],
                                       need_hidden)

    def logits_from_inputs(self, model: torch.nn.Module, inputs: dict[str, Tensor], t: int,
                           need_hidden: bool = False) -> tuple[Tensor, Tensor | None]:
        """:meth:`policy_logits` for given :meth:`model_inputs` whose last ``t`` positions are the completion."""
        fp32_head = split_causal_lm(adapter_base(model)) if self.hparams.cast_lm_head_to_fp32 else None
        if fp32_head is not None:  # the full-logits path of cast_lm_head_to_fp32
            with adapters_off(model):
                hidden = final_hidden_states(fp32_head, **inputs)[:, -t - 1 : -1]
            head = fp32_head.head
            logits = torch.nn.functional.linear(hidden.float(), head.weight.float(),
                                                None if head.bias is None else head.bias.float())
        else:
            out = model(**inputs, use_cache=False, logits_to_keep=t + 1, output_hidden_states=need_hidden)
            logits = out.logits[:, :-1]
            hidden = out.hidden_states[-1][:, -t - 1 : -1] if need_hidden else None
        temperature = self.hparams.temperature or 1.0
        if temperature != 1.0:
            logits = logits / temperature
        return logits, hidden

    def completion_scores(self, model: torch.nn.Module, rollout: Rollout, *, entropy: bool = False,
                          entropy_grad: bool = False, certainty_temperature: float | None = None,
                          need_hidden: bool = False, plain_ids: bool = False) -> CompletionScores:
        """What the losses read from one forward of ``model`` over the rollout (see CompletionScores).

        With ``chunked_lm_head`` (and a plain linear head) only the final hidden states are formed
        and the head runs in chunks recomputed in backward (:mod:`lit_reason.lm_head`), on the
        completion tokens under ``completion_mask`` (0 elsewhere); else from the full logits.
        ``entropy_grad``: the full path builds the entropy's graph only when it is trained on.
        """
        h = self.hparams
        self._enter_fsdp1_root()
        temperature = h.temperature or 1.0
        split = split_causal_lm(adapter_base(model)) if h.chunked_lm_head else None
        mask = rollout.completion_mask.bool()
        if split is None:
            forward = GRPO.policy_logits.__get__(self) if plain_ids else self.policy_logits
            logits, hidden = forward(model, rollout, need_hidden)
            chunk = h.logprob_chunk_size
            logps = obj.token_logps(logits, rollout.completion_ids, chunk)
            ent = None
            if entropy:
                grad = entropy_grad and torch.is_grad_enabled()
                with torch.set_grad_enabled(grad):
                    ent = obj.token_entropy(logits if grad else logits.detach(), chunk, mask=rollout.completion_mask)
            cert = None
            if certainty_temperature is not None:  # logits are z / T already
                cert = obj.self_certainty(logits, rollout.completion_mask, temperature=certainty_temperature / temperature,
                                          chunk_size=chunk)
            return CompletionScores(logps, ent, cert, hidden, logits=logits)
        inputs = GRPO.model_inputs(self, model, rollout) if plain_ids else self.model_inputs(model, rollout)
        t = rollout.completion_ids.shape[1]
        with adapters_off(model):
            hidden = final_hidden_states(split, **inputs)[:, -t - 1 : -1]
        stats = chunked_head_stats(hidden[mask], split.head.weight, rollout.completion_ids[mask], split.head.bias,
                                   temperature=temperature, entropy=entropy, certainty_temperature=certainty_temperature,
                                   chunk_size=h.logprob_chunk_size, fp32=h.cast_lm_head_to_fp32)

        def spread(values: Tensor) -> Tensor:  # [N] at the counted positions -> [B, T], 0 elsewhere
            return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)

        cert = None
        if stats.certainty is not None:  # the per-completion mean over its counted tokens
            cert = spread(stats.certainty).sum(-1) / mask.sum(-1).clamp_min(1)
        return CompletionScores(spread(stats.logps), None if stats.entropy is None else spread(stats.entropy), cert,
                                hidden if need_hidden else None, lse=spread(stats.lse), head=split.head)

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
        for s in self.micro_batches(len(rollout.texts)):
            part = rollout.select(s)
            if need_old:
                out.setdefault("old_logps", []).append(self.completion_scores(self.policy, part).logps)
            if need_ref:
                out.setdefault("ref_logps", []).append(self.reference_scores(part).logps)
        return {k: torch.cat(v) for k, v in out.items()}

    def reference_scores(self, rollout: Rollout) -> CompletionScores:
        """The reference model scores the plain token ids (HRPO keeps this too)."""
        return self.completion_scores(self.ref_model, rollout, plain_ids=True)

    def reference_logits(self, rollout: Rollout) -> tuple[Tensor, Tensor | None]:
        """The reference model's full logits over the plain token ids (the unchunked path)."""
        return GRPO.policy_logits(self, self.ref_model, rollout)

    # ------------------------------------------------------------------ rewards and weights
    def compute_rewards(self, problems: Sequence[Any], rollout: Rollout, scores: list[float],
                        old: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``[B]`` rewards (NaN = abstained) and their metrics. Intuitor overrides this."""
        scored = self.reward_sources(problems, rollout, scores)
        total, per_source, errors = scored.total(self.reward_weights), scored.per_source, scored.errors()
        for name, message in errors.items():
            self._warn_once(f"reward:{name}", f"reward {name!r} raised ({message}); counted as 0 for that completion")
        metrics = {}
        for name, values in per_source.items():
            metrics[f"rewards/{name}/mean"] = float(torch.nanmean(values)) if not torch.isnan(values).all() else 0.0
            metrics[f"rewards/{name}/std"] = float(values[~torch.isnan(values)].std()) if (~torch.isnan(values)).sum() > 1 else 0.0
            metrics[f"rewards/{name}/errors"] = float(name in errors)
        return total.to(self.device), metrics

    def score_rollout(self, problems: Sequence[Any], rollout: Rollout) -> ScoredCompletions:
        """Each completion's ``problem.score`` and reward sources, computed once: the rollout the
        step last scored (dynamic sampling's, assembled from its refills' values) is served again."""
        if self._scored is not None and self._scored[0] is rollout:
            return self._scored[1]
        scores = [float(p.score(t)) for p, t in zip(problems, rollout.texts)]
        scored = score_sources(self.reward_fns, list(problems), rollout.texts, scores)
        self._scored = (rollout, scored)
        return scored

    def reward_sources(self, problems: Sequence[Any], rollout: Rollout, scores: Sequence[float]) -> ScoredCompletions:
        """The reward sources of ``rollout`` given these scores (from :meth:`score_rollout` when it
        scored this very rollout with these scores, else computed now)."""
        memo = self._scored
        if memo is not None and memo[0] is rollout and (scores is memo[1].scores or memo[1].scores == list(scores)):
            return memo[1]
        return score_sources(self.reward_fns, list(problems), rollout.texts, list(scores))

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
        G = h.num_generations

        # 1. rollout (dynamic sampling: refilled until the batch holds informative groups)
        batch, rollout, trained_rows = self.rollout_step(batch)
        problems = [p for p in batch for _ in range(G)]
        # 2. reward (each completion scored once, dynamic sampling's refills included)
        scores = self.score_rollout(problems, rollout).scores
        need_old = self.needs_old_pass() or self.rollout_correction is not None
        old = self.old_policy_pass(rollout, need_old=need_old, need_ref=self.ref_model is not None)
        rewards, reward_metrics = self.compute_rewards(problems, rollout, scores, old)
        self._scored = None
        # 3. advantage
        advantages = self.compute_advantages(rewards, old)
        mask = rollout.completion_mask.float()
        if h.mask_truncated_completions:
            mask = mask * (~rollout.truncated).float()[:, None]
        if trained_rows is not None:  # dynamic sampling's padding groups stay out of the loss
            mask = mask * trained_rows.to(mask.dtype)[:, None]
        # 4. token weights
        weights = self.token_weights(rollout, advantages, old)
        weights, correction_metrics = self.correct_rollout_mismatch(rollout, mask, old, weights)
        # 5. update: mu passes, one optimizer step per minibatch
        step_metrics = self.update(rollout, advantages, mask, old, weights)
        step_metrics.update(correction_metrics)
        # 6. log
        self.log_step(rollout, rewards, scores, advantages, step_metrics, reward_metrics)
        return {"rollout": rollout, "problems": problems, "rewards": rewards, "scores": scores,
                "advantages": advantages, "old": old}

    #: Intuitor's reward needs the no-grad pass (self-certainty); dynamic sampling reads it per refill
    rewards_need_old_pass = False

    def rollout_step(self, batch: list[Any]) -> tuple[list[Any], Rollout, Tensor | None]:
        """``(problems, rollout, trained_rows)``: the batch's rollout, or with ``dynamic_sampling``
        the informative groups found within ``max_resample_batches`` refills (trained_rows is then
        False on the padding groups). Attempt 0 is exactly the plain rollout."""
        h = self.hparams
        if not h.dynamic_sampling:
            return list(batch), self.generate(batch, generator=self.sampling_generator()), None

        generated_rewards: list[Tensor] = []
        scored_draws: list[ScoredCompletions] = []

        def draw(attempt: int) -> tuple[list[Any], Rollout, Tensor]:
            problems = list(batch) if attempt == 0 else self._refill_problems(len(batch), attempt)
            rollout = self.generate(problems, generator=self.sampling_generator(salt=100 + attempt if attempt else 0))
            rows = [p for p in problems for _ in range(h.num_generations)]
            scored = self.score_rollout(rows, rollout)
            scored_draws.append(scored)
            old = self.old_policy_pass(rollout, need_old=False, need_ref=False) if self.rewards_need_old_pass else {}
            rewards, _ = self.compute_rewards(rows, rollout, scored.scores, old)
            generated_rewards.append(rewards)
            return problems, rollout, rewards

        filled = fill_informative_groups(draw, len(batch), h.num_generations, h.max_resample_batches,
                                         self.tokenizer.pad_token_id)
        G = h.num_generations  # the kept rows' scores and rewards, so the step does not score them again
        kept = [scored_draws[a].select(range(g * G, (g + 1) * G)) for a, g in filled.sources]
        self._scored = (filled.rollout, ScoredCompletions.concat(kept))
        counts = torch.tensor([filled.generated_groups, filled.kept_groups], dtype=torch.float64, device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:  # totals over all ranks: rank 0 checkpoints them
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        self.dynamic_sampling_totals["generated_groups"] += int(counts[0])
        self.dynamic_sampling_totals["kept_groups"] += int(counts[1])
        self.dynamic_sampling_stats = step_metrics(filled, len(batch), generated_rewards, self.dynamic_sampling_totals)
        return filled.problems, filled.rollout, filled.trained_rows

    def _refill_dataset(self) -> Any:
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        return getattr(loader, "dataset", None)

    def _refill_problems(self, count: int, attempt: int) -> list[Any]:
        """The problems of refill ``attempt``: a pure function of (seed, step, rank, attempt)."""
        dataset = self._refill_dataset()
        base = self.hparams.sampling_seed if self.hparams.sampling_seed is not None else torch.initial_seed() % (2**31)
        indices = refill_indices(len(dataset), count, int(base), self.global_step, self.global_rank, attempt)
        return [dataset[i] for i in indices]

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
                    self.clip_grad_norm(opt, h.max_grad_norm)
                used_lrs.append(float(opt.param_groups[0]["lr"]))
                opt.step()
                if sched is not None:
                    sched.step()
        out = {k: v / max(count, 1) for k, v in sums.items()}
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
            **reward_metrics,
            **step_metrics,
            **self.dynamic_sampling_stats,
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
