"""Intuitor: GRPO whose reward is the policy's own self-certainty (RLIF, arXiv 2505.19590).

Only the reward and advantage steps of the GRPO flow change:
  * :meth:`old_policy_pass` scores every completion's self-certainty (per token
    ``KL(U || softmax(z / T))``, averaged over the completion) from the same no-grad forward that
    gives the old (and reference) log-probs (``GRPO.completion_scores``: chunked over the head, or
    :func:`lit_reason.algorithms.objectives.self_certainty` on full logits), so it is computed ONLINE from the
    policy being trained and costs no extra forward. It runs even when GRPO needs no old log-probs
    (mu = 1, no minibatches).
  * :meth:`compute_rewards` gathers the sources: ``self_certainty`` plus any verifiable reward
    (``correct``, ``format``, your own). A source with weight 0 is computed and logged only, so
    accuracy is visible while training without labels.
  * :meth:`compute_advantages` normalises EACH weighted source within its group, then sums:
    ``A = sum_k w_k * group_normalise(r_k)``. (GRPO sums the rewards first and normalises once;
    here a source with a large numeric range cannot drown the others.)
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from lit_reason.algorithms.advantages import estimate_advantages
from lit_reason.modules.grpo import GRPO
from lit_reason.rollout import Rollout
from lit_reason.tasks.rewards import source_metrics

#: The reward-source name of the policy's own self-certainty in ``rewards:``.
SELF_CERTAINTY = "self_certainty"
#: Keys this module adds to the ``old`` dict (callbacks read them from ``outputs["old"]``).
OLD_SELF_CERTAINTY = "self_certainty"
SOURCE_PREFIX = "reward_sources/"


def split_reward_sources(rewards: dict[str, float] | None) -> tuple[float, dict[str, float]]:
    """``(self-certainty weight, verifiable sources)`` from the ``rewards`` option.

    Defaults: self-certainty weight 1; ``correct`` is always a verifiable source (weight 0 unless
    given one), so its mean is logged as ``rewards/correct/mean`` even without training on it.
    """
    sources = dict({SELF_CERTAINTY: 1.0} if rewards is None else rewards)
    weight = float(sources.pop(SELF_CERTAINTY, 0.0))
    sources.setdefault("correct", 0.0)
    if weight == 0.0 and not any(w != 0.0 for w in sources.values()):
        raise ValueError("model.rewards gives every source weight 0: set e.g. rewards: {self_certainty: 1.0}")
    return weight, {name: float(w) for name, w in sources.items()}


def summed_group_advantages(sources: dict[str, Tensor], weights: dict[str, float], group_size: int,
                            scale: str = "group", estimator: str = "grpo") -> Tensor:
    """``sum_k w_k * advantages(r_k)`` over the sources with a non-zero weight, each source's by
    ``estimator`` (lit_reason.algorithms.advantages; ``grpo`` = group-normalised).

    A NaN (abstained) reward gets advantage 0 from its own source only.
    """
    terms = [w * estimate_advantages(sources[name], group_size, estimator, scale)
             for name, w in weights.items() if w != 0.0]
    if not terms:
        raise ValueError("no reward source has a non-zero weight")
    return torch.stack(terms).sum(0)


class Intuitor(GRPO):
    """GRPO trained on self-certainty, optionally mixed with verifiable rewards.

    Args:
        rewards: source -> weight. ``self_certainty`` is the policy's own certainty (default
            ``{self_certainty: 1.0}``); any other name is a verifiable source as in GRPO.
            ``correct`` is always computed (weight 0 = logged only). Each source with a non-zero
            weight is group-normalised separately, then the weighted advantages are summed.
        self_certainty_temperature: T in ``KL(U || softmax(z / T))``. None (default) = the sampling
            temperature: the aligned, temperature-divided form (position t's distribution scores
            token t) that the reference calls correct. Give 1.0 to score raw logits while sampling
            at another temperature. (The other public variant also shifts the logits one position
            off; that needs the distribution AFTER the last completion token, which the training
            forward drops, so it is not offered.)
        **kwargs: everything :class:`GRPO` takes (the recipe: beta 0.005, G 7, lr 3e-6 cosine).

    Old log-probs: when GRPO needs none (mu = 1 and no minibatches) the pass computes only
    self-certainty and the ratio stays exactly 1 (``old = logps.detach()``), as in GRPO; the
    no-grad log-probs would equal it only up to float noise, so they are not reused.
    """

    rewards_need_old_pass = True  # self-certainty comes from the no-grad pass (dynamic sampling reads it)

    def __init__(self, *args: Any, rewards: dict[str, float] | None = None,
                 self_certainty_temperature: float | None = None, **kwargs: Any) -> None:
        sc_weight, verifiable = split_reward_sources(rewards)
        super().__init__(*args, rewards=verifiable, **kwargs)
        if self_certainty_temperature is not None and self_certainty_temperature <= 0:
            raise ValueError(f"model.self_certainty_temperature must be > 0 or null (= sampling temperature), got {self_certainty_temperature}")
        self.self_certainty_weight = sc_weight

    # ------------------------------------------------------------------ temperature
    @property
    def self_certainty_temperature(self) -> float:
        """T of ``KL(U || softmax(z / T))`` on the raw logits z (the sampling temperature by default)."""
        chosen = self.hparams.self_certainty_temperature
        return (self.hparams.temperature or 1.0) if chosen is None else float(chosen)

    # ------------------------------------------------------------------ old-policy pass
    @torch.no_grad()
    def old_policy_pass(self, rollout: Rollout, need_old: bool, need_ref: bool) -> dict[str, Tensor]:
        """GRPO's pass plus per-completion self-certainty ``[B]`` from the same forward."""
        out: dict[str, list[Tensor]] = {}
        for s in self.micro_batches(len(rollout.texts)):
            part = rollout.select(s)
            scores = self.completion_scores(self.policy, part, certainty_temperature=self.self_certainty_temperature)
            out.setdefault(OLD_SELF_CERTAINTY, []).append(scores.certainty)
            if need_old:
                out.setdefault("old_logps", []).append(scores.logps)
            del scores
            if need_ref:
                out.setdefault("ref_logps", []).append(self.reference_scores(part).logps)
        return {k: torch.cat(v) for k, v in out.items()}

    # ------------------------------------------------------------------ rewards
    def compute_rewards(self, problems: Sequence[Any], rollout: Rollout, scores: list[float],
                        old: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The weighted sum of all sources (what ``reward`` logs) and per-source metrics.

        Every source's ``[B]`` rewards are also stored in ``old["reward_sources/<name>"]`` for
        :meth:`compute_advantages` and for callbacks.
        """
        scored = self.reward_sources(problems, rollout, scores)
        per_source = {SELF_CERTAINTY: old[OLD_SELF_CERTAINTY].float().cpu(), **scored.per_source}
        for name, values in per_source.items():
            old[SOURCE_PREFIX + name] = values.to(self.device)
        metrics = source_metrics(per_source, scored.errors(), error_sources=self.reward_fns)
        weighted = torch.stack([w * per_source[n] for n, w in self.source_weights.items() if w != 0.0])
        total = torch.nansum(weighted, 0)
        total[torch.isnan(weighted).all(0)] = float("nan")
        return total.to(self.device), metrics

    @property
    def source_weights(self) -> dict[str, float]:
        """Every reward source with its weight, self-certainty first."""
        return {SELF_CERTAINTY: self.self_certainty_weight, **self.reward_weights}

    def compute_advantages(self, rewards: Tensor, old: dict[str, Tensor]) -> Tensor:
        """Each source's advantages over the rows whose summed reward is present: a NaN there (every
        weighted source abstained, or a dynamic-sampling padding row, which the step sets to NaN)
        keeps the row out of every source's group and batch statistics, as GRPO's summed reward does."""
        left_out = torch.isnan(rewards)
        sources = {name: old[SOURCE_PREFIX + name] for name in self.source_weights}
        sources = {name: r.masked_fill(left_out.to(r.device), float("nan")) for name, r in sources.items()}
        return summed_group_advantages(sources, self.source_weights, self.hparams.num_generations,
                                       self.hparams.scale_rewards, self.hparams.advantage_estimator)
