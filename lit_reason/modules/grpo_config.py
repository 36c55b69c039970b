"""What the GRPO family checks in its settings before anything loads or trains, one line per bad
value, and how long its LR schedule is (a run counts optimizer steps, several per rollout)."""

from __future__ import annotations

import warnings
from typing import Any, Callable

from lit_reason.algorithms import objectives as obj
from lit_reason.algorithms.advantages import check_estimator
from lit_reason.models.reference import check_ref_quantization
from lit_reason.rollout.vllm_engine import ROLLOUT_ENGINES
from lit_reason.rollout_step.episodes import EpisodeOptions
from lit_reason.rollout_step.async_rollouts import AsyncRolloutStep
from lit_reason.tasks.prompts import LONG_PROMPT_POLICIES, PROMPT_FORMATS
from lit_reason.utils.config_dataclass import parse_config
from lit_reason.utils.optim import optimizer_steps_per_rollout, run_optimizer_steps


def check_options(h: Any, module_name: str, own_engine: bool) -> None:
    """Raise ``ValueError`` with one line naming the fix for the first bad setting in ``h``.
    ``own_engine``: the module samples with an engine of its own (HRPO), which vLLM cannot run."""
    checks = [
        (h.num_generations >= 2, f"model.num_generations must be >= 2 (got {h.num_generations}): group advantages need a group"),
        (h.loss_type in obj.LOSS_TYPES, f"model.loss_type={h.loss_type!r}: choose one of {obj.LOSS_TYPES}"),
        (h.scale_rewards in obj.REWARD_SCALES, f"model.scale_rewards={h.scale_rewards!r}: choose one of {obj.REWARD_SCALES}"),
        (h.num_iterations >= 1, f"model.num_iterations must be >= 1 (got {h.num_iterations})"),
        (h.long_prompt in LONG_PROMPT_POLICIES, f"model.long_prompt={h.long_prompt!r}: choose 'truncate' or 'error'"),
        (h.prompt_format in PROMPT_FORMATS, f"model.prompt_format={h.prompt_format!r}: choose auto, chat or plain"),
        (h.val_num_samples >= 1, "model.val_num_samples must be >= 1"),
        (h.logprob_chunk_size >= 1, f"model.logprob_chunk_size must be >= 1 (got {h.logprob_chunk_size})"),
        (h.temperature > 0, f"model.temperature must be > 0 for training (got {h.temperature}): at 0 every completion "
                            "of a group is the same and no advantage is left to learn from; val_temperature sets "
                            "evaluation's"),
        (h.lr >= 0, f"model.lr must be >= 0 (got {h.lr})"),
        (h.beta >= 0, f"model.beta must be >= 0 (got {h.beta}): it weighs a KL penalty (0 = no reference)"),
        (h.max_grad_norm is None or h.max_grad_norm >= 0,
         f"model.max_grad_norm must be >= 0 or null (got {h.max_grad_norm}; 0 = no clipping)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    check_ref_quantization(h.ref_quantization)
    problem = algorithm_option_problem(h)
    if problem is not None:
        raise ValueError(problem)
    engine = h.get("rollout_engine", "builtin")
    if engine not in ROLLOUT_ENGINES:
        raise ValueError(f"model.rollout_engine={engine!r}: choose one of {ROLLOUT_ENGINES}")
    if engine == "vllm" and own_engine:
        raise ValueError(f"model.rollout_engine=vllm: {module_name} samples with its own engine "
                         "(vLLM cannot run it); set model.rollout_engine=builtin")
    problem = episode_option_problem(h, module_name, own_engine)
    if problem is not None:
        raise ValueError(problem)
    for note in no_effect_notes(h):
        warnings.warn(note, UserWarning, stacklevel=3)
    if h.ref_quantization is not None and h.get("lora") is not None:
        raise ValueError("model.ref_quantization has no effect with model.lora (the reference is the base with the "
                         "adapters off, no copy): unset ref_quantization; lora.load_in_4bit quantizes the base")
    if h.get("async_rollouts") is not None:
        if h.get("episodes") is not None:
            raise ValueError("model.async_rollouts samples single-turn completions in its own process; multi-turn "
                             "model.episodes run in the trainer: set one of them, not both")
        AsyncRolloutStep.check_module(h, own_engine)


def no_effect_notes(h: Any) -> list[str]:
    """Switches that the configured run makes inert, said once when the module is built: with one
    optimizer step per rollout (``num_iterations: 1``, no ``minibatch_size``) the ratio to the
    sampling policy is exactly 1, so clipping never acts and GSPO's sequence ratio gives GRPO's gradient."""
    if h.num_iterations != 1 or h.minibatch_size is not None:
        return []
    where = ("it acts only off-policy: set model.num_iterations > 1 or a model.minibatch_size below the rollout "
             "(one optimizer step per rollout makes the ratio exactly 1)")
    notes = []
    if h.importance_sampling_level == "sequence":
        notes.append(f"model.importance_sampling_level=sequence (GSPO) gives GRPO's gradient here: {where}")
    if h.eps_low != 0.2 or h.eps_high is not None:
        notes.append(f"model.eps_low / eps_high (clipping) have no effect here: {where}")
    return notes


def algorithm_option_problem(h: Any) -> str | None:
    """GSPO / CISPO / estimators / token selection / dynamic sampling: the first bad value, if any."""
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
    return problem


def episode_option_problem(h: Any, module_name: str, own_engine: bool) -> str | None:
    """``model.episodes`` (built-in engine or vLLM); the combinations that cannot work, in one line."""
    if h.get("episodes") is None:
        return None
    problem = parse_config(EpisodeOptions, h.episodes, "model.episodes").problem()
    if problem is not None:
        return problem
    if own_engine:
        return (f"model.episodes: {module_name} samples with its own engine, whose per-position state multi-turn "
                "episodes do not carry across turns; use GRPO, Intuitor or NTHR for episodes")
    if h.top_entropy_quantile < 1.0:
        return ("model.top_entropy_quantile < 1 with model.episodes: the token pool is sized by max_new_tokens, "
                "an episode is longer; set top_entropy_quantile=1.0")
    return None


def check_batch_sizes(h: Any, batch_size: int | None) -> None:
    """``minibatch_size`` and ``micro_batch_size`` must divide the rollout (``batch_size`` x G rows)."""
    if batch_size is None:
        return
    rows = batch_size * h.num_generations
    for name in ("minibatch_size", "micro_batch_size"):
        size = getattr(h, name)
        if size is not None and (size < 1 or rows % size):
            raise ValueError(f"model.{name}={size} must divide the rollout batch data.batch_size x num_generations = {rows}")


def schedule_length(trainer: Any, h: Any, warn: Callable[[str, str], None]) -> int:
    """Length of the LR schedule: the optimizer steps this run will take, num_iterations x
    minibatches per rollout (``trainer.max_steps`` counts optimizer steps; see lit_reason.utils.optim)."""
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
        warn("max_steps", f"trainer.max_steps={trainer.max_steps} counts optimizer steps and a rollout "
             f"takes {per_rollout} (num_iterations x minibatches); the run stops after the rollout "
             f"that reaches it, at {int(total)} steps: set a multiple of {per_rollout}")
    return max(int(total), 1)
