"""NTHR: GRPO whose incorrect-response tokens that most displace the correct responses get a
softer penalty (arXiv 2505.18830). Only step 4 of the GRPO flow (token weights) changes.

Data flow inside one training step:
  * :meth:`old_policy_pass` (one no-grad forward, as GRPO's) also keeps the final hidden states
    ``[B, T, H]`` and the next-token probabilities restricted to each group's token set S,
    ``[B, T, S_max]`` float32 (never a float32 ``[T, V]``: with the chunked head only the S columns'
    logits are formed, from the normaliser the log-prob pass already computed).
  * :meth:`compute_rewards` records which completions are correct (score >= 1) in ``old``.
  * :meth:`token_weights` runs :func:`lit_reason.algorithms.nthr.group_token_weights` group by group.
The math is in :mod:`lit_reason.algorithms.nthr`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from lit_reason.algorithms import nthr
from lit_reason.algorithms import objectives as obj
from lit_reason.algorithms.lm_head import restricted_probs_from_head
from lit_reason.modules.grpo import GRPO
from lit_reason.rollout import Rollout


def padded_group_vocabularies(token_ids: Tensor, mask: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """``(vocab [B/G, S_max], sizes [B/G])``: each group's sorted token set, padded with id 0."""
    sets = [nthr.group_vocabulary(token_ids[g : g + group_size], mask[g : g + group_size])
            for g in range(0, token_ids.shape[0], group_size)]
    width = max(max(s.numel() for s in sets), 1)
    vocab = torch.zeros(len(sets), width, dtype=torch.long, device=token_ids.device)
    for i, s in enumerate(sets):
        vocab[i, : s.numel()] = s
    return vocab, torch.tensor([s.numel() for s in sets], device=token_ids.device)


class NTHR(GRPO):
    """GRPO with Negative Token Hidden Reward weighting.

    Args:
        beta_nthr: threshold scale: tau = beta_nthr x (min over correct responses of their mean s+).
        eta: factor on the selected tokens' negative advantage: a float (0 removes them, the
            paper's LLD analysis) or ``"adaptive"`` = 2|0.5 - p|, p the group's success rate.
        threshold_self_terms: count each correct token's influence on itself in the s+ that sets
            the threshold (True, the sum as the paper writes it, over every pair of correct tokens);
            False leaves the (k, k) pairs out, which lowers tau and selects more tokens.
        filter_zero_std_groups: drop groups whose rewards are all equal from the loss (mask their
            rows: no policy-gradient or KL term, not in the bnpo/dapo token count). The batch is
            NOT refilled with new groups as the paper's dynamic sampling does.
        **kwargs: everything :class:`GRPO` takes.
    """

    def __init__(self, *args: Any, beta_nthr: float = 1.0, eta: float | str = nthr.ADAPTIVE,
                 threshold_self_terms: bool = True, filter_zero_std_groups: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(eta, str) and eta != nthr.ADAPTIVE:
            raise ValueError(f"model.eta={eta!r}: give a number (e.g. 0.0) or 'adaptive'")
        if not isinstance(eta, str) and eta < 0:
            raise ValueError(f"model.eta={eta} must be >= 0 (it scales a penalty)")
        self.nthr_stats: dict[str, float] = {}  # the last step's figures (also logged)

    # -------------------------------------------------------------- old-policy pass
    @torch.no_grad()
    def old_policy_pass(self, rollout: Rollout, need_old: bool, need_ref: bool) -> dict[str, Tensor]:
        """GRPO's pass plus what the weights need, from the same forward (no extra one)."""
        G = self.hparams.num_generations
        vocab, sizes = padded_group_vocabularies(rollout.completion_ids, rollout.completion_mask, G)
        out: dict[str, list[Tensor]] = {}
        for s in self.micro_batches(len(rollout.texts)):
            part = rollout.select(s)
            scores = self.completion_scores(self.policy, part, need_hidden=True)
            if need_old:
                out.setdefault("old_logps", []).append(scores.logps)
            columns = vocab[torch.arange(s.start, s.stop, device=vocab.device) // G]  # each row's group's ids
            out.setdefault("nthr_probs", []).append(self.group_probs(scores, part, columns))
            out.setdefault("nthr_hidden", []).append(scores.hidden.detach())
            del scores
            if need_ref:
                out.setdefault("ref_logps", []).append(self.reference_scores(part).logps)
        result = {k: torch.cat(v) for k, v in out.items()}
        result["nthr_vocab"], result["nthr_vocab_sizes"] = vocab, sizes
        return result

    def group_probs(self, scores, part: Rollout, columns: Tensor) -> Tensor:
        """``[b, T, S_max]`` float32: each row's next-token probabilities at its group's ids ``columns``
        ``[b, S_max]``, from the full logits a chunk at a time, or (chunked head) from the hidden
        states and those S columns of the head only (0 at padding positions, which NTHR never reads)."""
        if scores.logits is not None:
            chunk = self.hparams.logprob_chunk_size
            return torch.stack([nthr.restricted_probs(scores.logits[r], columns[r], chunk)
                                for r in range(columns.shape[0])])
        mask = part.completion_mask.bool()
        probs = torch.zeros(*mask.shape, columns.shape[1], dtype=torch.float32, device=columns.device)
        head, temperature = scores.head, self.hparams.temperature or 1.0
        for r in range(columns.shape[0]):
            probs[r, mask[r]] = restricted_probs_from_head(scores.hidden[r][mask[r]], head.weight, columns[r],
                                                           scores.lse[r][mask[r]], head.bias, temperature,
                                                           self.hparams.cast_lm_head_to_fp32)
        return probs

    # -------------------------------------------------------------- rewards: remember correctness
    def compute_rewards(self, problems: Sequence[Any], rollout: Rollout, scores: list[float],
                        old: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """GRPO's rewards; also stores in ``old`` which completions are correct (score >= 1: the
        scores decide correctness, the rewards' sign decides the advantage) and which groups
        have non-constant rewards."""
        rewards, metrics = super().compute_rewards(problems, rollout, scores, old)
        old["nthr_correct"] = torch.tensor([s >= 1.0 for s in scores], dtype=torch.bool, device=self.device)
        keep = ~obj.zero_std_groups(rewards, self.hparams.num_generations)
        old["nthr_keep_rows"] = keep.repeat_interleave(self.hparams.num_generations)
        return rewards, metrics

    # -------------------------------------------------------------- the weights
    def token_weights(self, rollout: Rollout, advantages: Tensor, old: dict[str, Tensor]) -> Tensor:
        h, G = self.hparams, self.hparams.num_generations
        ids, mask = rollout.completion_ids, rollout.completion_mask
        weights = torch.ones(ids.shape, dtype=torch.float32, device=ids.device)
        scores, taus, selected, mixed = [], [], 0, 0
        for g, start in enumerate(range(0, ids.shape[0], G)):
            rows, n = slice(start, start + G), int(old["nthr_vocab_sizes"][g])
            result = nthr.group_token_weights(
                ids[rows], mask[rows], old["nthr_hidden"][rows], old["nthr_probs"][rows, :, :n],
                old["nthr_vocab"][g, :n], old["nthr_correct"][rows], advantages[rows], h.beta_nthr, h.eta,
                self_terms=h.threshold_self_terms,
            )
            weights[rows] = result.weights
            selected += int(result.selected.sum())
            if result.tau is not None:
                mixed += 1
                taus.append(result.tau)
                scores.append(result.neg_scores)
        negative_tokens = float((mask.bool() & (advantages < 0)[:, None]).sum())
        all_scores = torch.cat(scores) if scores else weights.new_zeros(0)
        self.nthr_stats = {
            "nthr/frac_downweighted": selected / max(negative_tokens, 1.0),
            "nthr/mean_score": float(all_scores.mean()) if all_scores.numel() else 0.0,
            "nthr/mean_tau": sum(taus) / len(taus) if taus else 0.0,
            "nthr/mixed_groups": mixed / max(ids.shape[0] // G, 1),
        }
        if self._trainer is not None:
            self.log_dict(self.nthr_stats, batch_size=ids.shape[0], sync_dist=self.trainer.world_size > 1)
        return weights

    # -------------------------------------------------------------- optional group filtering
    def update(self, rollout: Rollout, advantages: Tensor, mask: Tensor, old: dict[str, Tensor],
               weights: Tensor | None) -> dict[str, float]:
        if self.hparams.filter_zero_std_groups and "nthr_keep_rows" in old:
            mask = mask * old["nthr_keep_rows"].to(mask.dtype)[:, None]
        return super().update(rollout, advantages, mask, old, weights)
