"""HRPO (arXiv 2505.18454): GRPO whose reasoning span is fed hybrid latent inputs by a learnable gate.

What differs from :class:`GRPO`, one hook each:
- :meth:`build_engine`: the rollout (training and greedy evaluation alike) mixes latents into the
  inputs until the answer delimiter, storing per position the latent, the mix mask and the gate value.
- :meth:`model_inputs` (and :meth:`policy_logits`): the training forward re-runs the policy on the
  STORED latents (constants) through the CURRENT gate, so gradients reach the gate, Lambda and the
  model. The reference model still scores plain token ids (``GRPO.reference_logits``).
- :meth:`compute_rewards`: a completion with more than one delimiter gets reward 0.
- :meth:`optimizer_param_groups`: model, gate linears and Lambda each get their own lr and decay.
Strictly on-policy (one update per rollout), so the spine's ratio is ``exp(logp - logp.detach())``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from lit_reason.algorithms.hybrid import HybridGate, hybrid_inputs_embeds
from lit_reason.rollout.latent import LATENTS, MIX, HybridRolloutEngine
from lit_reason.modules.grpo import GRPO
from lit_reason.rollout import Rollout, RolloutEngine, SamplingConfig, positions_from_mask

class HRPO(GRPO):
    """Hybrid latent reasoning policy optimisation.

    Args:
        tau: temperature of the latent distribution ``p = softmax(logits / tau)`` (paper: 0.5).
        delimiter: text that ends the reasoning span (``####`` in the paper; ``<answer>`` suits the
            project's answer tags). ``""``: the whole completion is the reasoning span. Quote it in
            YAML (``delimiter: "####"``): unquoted, YAML reads ``####`` as a comment, i.e. null.
        gate_c: the constant c of ``a = exp(-c * softplus(Lambda) * r)`` (paper: 8).
        r_min, r_max: Lambda's init range for ``exp(-c * softplus(Lambda))`` (paper: 0.99 .. 0.999).
        gate_lr, lambda_lr: learning rates of the gate linears W_r, W_i and of Lambda (1e-4, 1e-3);
            ``lr`` is the model's.
        weight_decay: decoupled decay of the model (paper: 0.1, the default here).
        gate_weight_decay: decoupled decay of the gate linears (default: ``weight_decay``).
        lambda_weight_decay: decay of Lambda (default: ``weight_decay``, as in the paper, where 0.1
            applies to every parameter). Decay pulls Lambda towards 0, i.e. ``a`` towards
            exp(-c ln 2) ~ 0.004: a slow drift towards latents that the recipe relies on; set 0
            to let only the gradient move the gate.
        temperature: sampling temperature (default 0.5, the public HRPO code's; GRPO's is 1.0).
        max_delimiters: completions with more delimiters than this get reward 0 (paper: 1).
        **kwargs: every :class:`GRPO` argument (``num_iterations`` must stay 1); among them
            ``lora: {r: 32, alpha: 64}`` for the paper's LoRA adapters (the gate stays fully
            trainable, with its own learning rates).
    """

    def __init__(
        self,
        tau: float = 0.5,
        delimiter: str = "####",
        gate_c: float = 8.0,
        r_min: float = 0.99,
        r_max: float = 0.999,
        gate_lr: float = 1e-4,
        lambda_lr: float = 1e-3,
        weight_decay: float = 0.1,
        temperature: float = 0.5,
        gate_weight_decay: float | None = None,
        lambda_weight_decay: float | None = None,
        max_delimiters: int = 1,
        **kwargs: Any,
    ) -> None:
        # builds the engines, and with them the gate (see build_engine)
        super().__init__(weight_decay=weight_decay, temperature=temperature, **kwargs)

    # ------------------------------------------------------------------ configuration
    def _check_config(self) -> None:
        super()._check_config()
        h = self.hparams
        if h.num_iterations != 1:
            raise ValueError(f"HRPO is on-policy: model.num_iterations must be 1 (got {h.num_iterations}); "
                             "the stored latents belong to the policy that sampled them")
        if h.minibatch_size is not None:
            raise ValueError("HRPO is on-policy (one update per rollout): leave model.minibatch_size unset; "
                             "use model.micro_batch_size to save memory")
        if h.tau <= 0:
            raise ValueError(f"model.tau must be > 0 (latent temperature), got {h.tau}")
        if h.delimiter is None:
            raise ValueError('model.delimiter is null: YAML reads an unquoted #### (also on the command line) as a comment; '
                             'write delimiter: "####" in the config file, or delimiter: "" to mix the whole completion')
        if h.max_delimiters < 1:
            raise ValueError(f"model.max_delimiters must be >= 1, got {h.max_delimiters}")

    def build_engine(self, sampling: SamplingConfig) -> RolloutEngine:
        """The latent-mixing engine, for rollouts and for evaluation alike. ``GRPO.__init__`` calls
        this before HRPO's own body runs, so the gate is created here, once."""
        if "gate" not in self._modules:
            h = self.hparams
            hidden = self.policy.get_input_embeddings().weight.shape[1]
            self.gate = HybridGate(hidden, c=h.gate_c, r_min=h.r_min, r_max=h.r_max)
        return HybridRolloutEngine(self.policy, self.tokenizer, sampling, self.gate, tau=self.hparams.tau,
                                   delimiter=self.hparams.delimiter)

    def optimizer_param_groups(self) -> list[dict]:
        h = self.hparams
        gate_decay = h.weight_decay if h.gate_weight_decay is None else h.gate_weight_decay
        lambda_decay = h.weight_decay if h.lambda_weight_decay is None else h.lambda_weight_decay
        linears = [*self.gate.W_r.parameters(), *self.gate.W_i.parameters()]
        groups = [
            {"params": [p for p in self.policy.parameters() if p.requires_grad], "lr": h.lr, "weight_decay": h.weight_decay},
            {"params": linears, "lr": h.gate_lr, "weight_decay": gate_decay},
            {"params": [self.gate.Lambda], "lr": h.lambda_lr, "weight_decay": lambda_decay},
        ]
        return [g for g in groups if g["params"]]

    # ------------------------------------------------------------------ forward
    def model_inputs(self, model: torch.nn.Module, rollout: Rollout) -> dict[str, Tensor]:
        """``inputs_embeds`` instead of ids: prompt = plain embeddings; completion position t = the
        gate's blend of e(c_t) and the stored latent h_t where the rollout mixed."""
        if MIX not in rollout.extras:
            return super().model_inputs(model, rollout)
        mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)
        prompt_embeds = model.get_input_embeddings()(rollout.prompt_ids)
        completion_embeds = hybrid_inputs_embeds(model, self.gate, rollout.completion_ids,
                                                 rollout.extras[LATENTS], rollout.extras[MIX])
        embeds = torch.cat([prompt_embeds, completion_embeds], dim=1)
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions_from_mask(mask)}

    def policy_logits(self, model: torch.nn.Module, rollout: Rollout, need_hidden: bool = False) -> tuple[Tensor, Tensor | None]:
        """Like ``GRPO.policy_logits`` but fed :meth:`model_inputs` (position P-1+t scores completion token t).
        The chunked path (``chunked_lm_head``) reads the same :meth:`model_inputs`."""
        return self.logits_from_inputs(model, self.model_inputs(model, rollout), rollout.completion_ids.shape[1],
                                       need_hidden)

    # ------------------------------------------------------------------ reward
    def compute_rewards(self, problems: Sequence[Any], rollout: Rollout, scores: list[float],
                        old: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        total, metrics = super().compute_rewards(problems, rollout, scores, old)
        delimiter = self.hparams.delimiter
        if delimiter:
            too_many = torch.tensor([text.count(delimiter) > self.hparams.max_delimiters for text in rollout.texts],
                                    device=total.device)
            total = torch.where(too_many, torch.zeros_like(total), total)
            metrics["hrpo/multi_delimiter_frac"] = float(too_many.float().mean())
        return total, metrics
