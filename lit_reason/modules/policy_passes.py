"""The policy's two passes over a rollout, shared by the GRPO family: sampling it (prompts
encoded, G completions each through the rollout engine) and scoring it in a forward (log-probs,
entropy, self-certainty; chunked over the LM head or from full logits; the no-grad old/reference pass).

HRPO overrides :meth:`model_inputs` and :meth:`policy_logits`; Intuitor and NTHR add what they need
to :meth:`old_policy_pass`. The losses that read these passes are in :mod:`lit_reason.modules.grpo`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_reason.algorithms import objectives as obj
from lit_reason.algorithms.lm_head import chunked_head_stats
from lit_reason.models.causal_lm import CompletionScores, adapter_base, adapters_off, final_hidden_states, split_causal_lm
from lit_reason.models.lora import AdaptersOff
from lit_reason.models.policy import load_policy
from lit_reason.models.reference import build_reference
from lit_reason.modules.strategy_hooks import StrategyHooks
from lit_reason.rollout import Rollout, RolloutEngine, SamplingConfig, positions_from_mask
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine
from lit_reason.rollout.vllm_engine import VLLMRolloutEngine, build_vllm_session
from lit_reason.tasks.prompts import encode_prompt
from lit_reason.utils.rng import rollout_seed


class PolicyPasses(StrategyHooks):
    """Sampling and scoring passes of ``self.policy``, and the engines and reference they use
    (the module's ``__init__`` sets ``policy``, ``tokenizer``, ``lora``; builds ``engine``,
    ``val_engine`` and ``ref_model`` with the methods here)."""

    # ------------------------------------------------------------------ engines and reference
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
                if h.get("episodes") is not None:  # a turn's prompt is the episode so far (< max_episode_tokens)
                    longest = max(longest, h.episodes["max_episode_tokens"] + h.max_new_tokens)
                seed = h.sampling_seed if h.sampling_seed is not None else 0
                self._vllm_session = build_vllm_session(self.policy, self.tokenizer, h.get("vllm"), h.max_prompt_length,
                                                        longest, self._optimizer_steps, seed, self._wrapped_root)
            return VLLMRolloutEngine(self._vllm_session, self.tokenizer, sampling)
        if self.hparams.fast_generation and torch.cuda.is_available():
            # the module is still on CPU here; the engine takes the static path once prompts are on CUDA
            return StaticCacheRolloutEngine(self.policy, self.tokenizer, sampling, max_prompt_length=h.max_prompt_length)
        return RolloutEngine(self.policy, self.tokenizer, sampling)

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

    # ------------------------------------------------------------------ sampling
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def encode_prompt(self, prompt: Any, max_length: int | None = None) -> list[int]:
        """Token ids of one prompt: chat template (per ``prompt_format``) and at most ``max_length``
        tokens (default ``max_prompt_length``); a long prompt loses the start of its user text,
        never the template (see lit_reason.tasks.prompts)."""
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

    def sampling_seed_base(self) -> int:
        """``sampling_seed``, else the global seed: what every rollout generator is derived from."""
        seed = self.hparams.sampling_seed
        return int(seed if seed is not None else torch.initial_seed() % (2**31))

    def sampling_generator(self, salt: int = 0) -> torch.Generator:
        """The generator of one rollout: a pure function of (seed, global step, rank, salt)."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(rollout_seed(self.sampling_seed_base(), self.global_step, self.global_rank, salt))
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
        mask = torch.cat([rollout.prompt_mask, rollout.context_mask], dim=1)  # episodes: env tokens are context
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions_from_mask(mask)}

    def policy_logits(self, model: torch.nn.Module, rollout: Rollout, need_hidden: bool = False) -> tuple[Tensor, Tensor | None]:
        """Logits ``[B, T, V]`` (divided by the sampling temperature) that scored each completion
        token, and optionally the final hidden states ``[B, T, H]`` at the same positions."""
        return self.logits_from_inputs(model, PolicyPasses.model_inputs(self, model, rollout), rollout.completion_ids.shape[1],
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
        and the head runs in chunks recomputed in backward (:mod:`lit_reason.algorithms.lm_head`), on the
        completion tokens under ``completion_mask`` (0 elsewhere); else from the full logits.
        ``entropy_grad``: the full path builds the entropy's graph only when it is trained on.
        """
        h = self.hparams
        self._enter_fsdp1_root()
        temperature = h.temperature or 1.0
        split = split_causal_lm(adapter_base(model)) if h.chunked_lm_head else None
        mask = rollout.completion_mask.bool()
        if split is None:
            forward = PolicyPasses.policy_logits.__get__(self) if plain_ids else self.policy_logits
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
        inputs = PolicyPasses.model_inputs(self, model, rollout) if plain_ids else self.model_inputs(model, rollout)
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
        return PolicyPasses.policy_logits(self, self.ref_model, rollout)
