"""NTHR (arXiv 2505.18830) as pure functions: which tokens of the incorrect responses of a group
pull down the likelihood of its correct responses, and how much to soften their penalty.

Everything here works on ONE group (the G completions of one prompt) and on tensors the
old-policy pass already produced: final hidden states ``h`` at the positions that predict each
completion token, and the next-token probabilities ``pi`` there. No extra forward pass.

The influence of a correct token k (of response i) on an incorrect token k' (of response j) is

    alpha(k, k') * <h+_k, h-_k'>,   alpha(k, k') = <e_{y+_k} - pi+_k, e_{y-_k'} - pi-_k'>

(the inner product of the two log-likelihood gradients w.r.t. the unembedding matrix). Expanded,
``alpha = [y+_k == y-_k'] - pi-_k'[y+_k] - pi+_k[y-_k'] + <pi+_k, pi-_k'>``.

Vocabulary restriction (what is computed, precisely): let S be the sorted set of token ids that
occur in the group's completions (under the mask). Every error vector ``e_y - pi`` is replaced by
its restriction to the coordinates in S: ``e_y`` keeps its 1 (y is always in S) and ``pi`` keeps
only its S entries, NOT renormalised. The first three terms of alpha are unchanged (they only read
ids in S); the fourth becomes ``sum over v in S of pi+_k[v] pi-_k'[v]``, dropping the mass both
distributions put outside S, which is small. With S = the full vocabulary nothing is dropped.

Sums first: s-(k') = sum_k alpha(k, k') <h+_k, h-_k'> = < E-_k' (E+^T H+), h-_k' >, so the correct
tokens are summed once into an ``[|S|, H]`` matrix and each incorrect token costs one row-vector
product: O((N+ + N-) |S| H) time and ``|S| x H`` memory, never an ``N+ x N-`` matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ADAPTIVE = "adaptive"


def group_vocabulary(token_ids: Tensor, mask: Tensor) -> Tensor:
    """Sorted unique ids of the tokens under ``mask`` (the set S of one group)."""
    return torch.unique(token_ids[mask.bool()])


def restricted_probs(logits: Tensor, columns: Tensor, chunk_size: int = 1024) -> Tensor:
    """``softmax(logits)[..., columns]`` in float32: the full-vocabulary softmax read at S only.

    Args:
        logits: ``[N, V]`` (any dtype; already divided by the sampling temperature).
        columns: ``[S]`` or ``[N, S]`` vocabulary ids.
        chunk_size: rows converted to float32 at a time (never a float32 copy of all of ``logits``).
    """
    cols = columns.expand(logits.shape[0], -1) if columns.dim() == 1 else columns
    out = torch.empty(cols.shape, dtype=torch.float32, device=logits.device)
    for start in range(0, logits.shape[0], chunk_size):
        z = logits[start : start + chunk_size].float()
        out[start : start + chunk_size] = torch.exp(z.gather(-1, cols[start : start + chunk_size])
                                                    - torch.logsumexp(z, dim=-1, keepdim=True))
    return out


def error_vectors(token_ids: Tensor, probs: Tensor, vocab: Tensor) -> Tensor:
    """``e_y - pi`` restricted to the sorted ids ``vocab``: ``[N, S]`` float32.

    ``probs[n, c]`` is the probability of id ``vocab[c]`` at token n. Every token id must be in vocab.
    """
    col = torch.searchsorted(vocab, token_ids).clamp_max(vocab.numel() - 1)
    if not torch.equal(vocab[col], token_ids):
        raise ValueError("error_vectors: a token id is missing from the group vocabulary")
    err = -probs.float()
    err[torch.arange(token_ids.numel(), device=err.device), col] += 1.0
    return err


def influence_scores(src_err: Tensor, src_hidden: Tensor, dst_err: Tensor, dst_hidden: Tensor) -> Tensor:
    """``[N_dst]``: for each destination token k', ``sum over source tokens k of alpha(k, k') <h_k, h_k'>``.

    ``*_err`` are error vectors ``[N, S]`` (:func:`error_vectors`), ``*_hidden`` are ``[N, H]``.
    """
    summary = src_err.T @ src_hidden.float()  # [S, H]: all source tokens summed first
    return ((dst_err @ summary) * dst_hidden.float()).sum(-1)


def self_influence(err: Tensor, hidden: Tensor) -> Tensor:
    """``[N]``: each token's influence on itself, ``alpha(k, k) <h_k, h_k> = ||e_k - pi_k||^2 ||h_k||^2``
    (always >= 0): the diagonal of the pair sum :func:`influence_scores` takes over a set with itself."""
    return (err.float() ** 2).sum(-1) * (hidden.float() ** 2).sum(-1)


def nthr_threshold(pos_scores: Tensor, pos_response: Tensor, beta_nthr: float) -> float:
    """``tau = beta_nthr * min over correct responses of the mean of s+ over its tokens``.

    Args:
        pos_scores: ``[N+]`` s+ of every token of every correct response.
        pos_response: ``[N+]`` which correct response each token belongs to (any integer labels).
    """
    means = [pos_scores[pos_response == r].mean() for r in torch.unique(pos_response)]
    return float(beta_nthr * torch.stack(means).min())


def adaptive_eta(success_rate: float) -> float:
    """``eta = 2 |0.5 - p|``: no damping for near-solved or near-hopeless groups, full at p = 0.5."""
    return 2.0 * abs(0.5 - float(success_rate))


def resolve_eta(eta: float | str, success_rate: float) -> float:
    if isinstance(eta, str):
        if eta != ADAPTIVE:
            raise ValueError(f"eta={eta!r}: give a float or 'adaptive'")
        return adaptive_eta(success_rate)
    return float(eta)


@dataclass
class GroupWeights:
    """What :func:`group_token_weights` decided for one group.

    weights: ``[G, T]``, eta on the selected tokens, 1 elsewhere (padding included).
    selected: ``[G, T]`` bool, the down-weighted tokens.
    neg_scores: s- of every token of every incorrect response (empty when the group is not mixed).
    tau: the threshold (None when the group is not mixed), eta: the factor applied.
    """

    weights: Tensor
    selected: Tensor
    neg_scores: Tensor
    tau: float | None
    eta: float | None


def group_token_weights(
    token_ids: Tensor,
    mask: Tensor,
    hidden: Tensor,
    probs: Tensor,
    vocab: Tensor,
    correct: Tensor,
    advantages: Tensor,
    beta_nthr: float = 1.0,
    eta: float | str = ADAPTIVE,
    self_terms: bool = True,
) -> GroupWeights:
    """NTHR token weights of one group.

    Args:
        token_ids, mask: ``[G, T]`` completion ids and their mask.
        hidden: ``[G, T, H]`` final hidden states at the positions predicting each token.
        probs: ``[G, T, S]`` next-token probabilities of the ids ``vocab`` (``[S]``, sorted, must
            contain every masked token id; the full vocabulary ``arange(V)`` is allowed).
        correct: ``[G]`` bool, which completions are correct.
        advantages: ``[G]``; only tokens with a negative advantage are ever down-weighted.
        beta_nthr: scales the threshold (larger = fewer tokens selected).
        eta: a float or ``"adaptive"`` (``2|0.5 - p|``, p the share of correct completions).
        self_terms: whether a correct token's s+ (which sets tau) counts its influence on itself.
            The paper sums over all correct tokens, which includes the pair (k, k); that term is
            ``||e - pi||^2 ||h||^2 >= 0`` and often the largest, raising tau. False leaves it out.

    A token of an incorrect completion is selected when its s- exceeds tau and its advantage is
    negative. Groups without both correct and incorrect completions keep weight 1 everywhere.
    """
    m = mask.bool()
    correct = correct.bool()
    weights = torch.ones(token_ids.shape, dtype=torch.float32, device=token_ids.device)
    selected = torch.zeros_like(m)
    pos_tok = m & correct[:, None]
    neg_tok = m & ~correct[:, None]
    if not pos_tok.any() or not neg_tok.any():
        return GroupWeights(weights, selected, weights.new_zeros(0), None, None)

    pos_err = error_vectors(token_ids[pos_tok], probs[pos_tok], vocab)
    neg_err = error_vectors(token_ids[neg_tok], probs[neg_tok], vocab)
    pos_h, neg_h = hidden[pos_tok], hidden[neg_tok]
    neg_scores = influence_scores(pos_err, pos_h, neg_err, neg_h)
    pos_scores = influence_scores(pos_err, pos_h, pos_err, pos_h)
    if not self_terms:
        pos_scores = pos_scores - self_influence(pos_err, pos_h)
    rows = torch.arange(token_ids.shape[0], device=token_ids.device)[:, None].expand_as(m)
    tau = nthr_threshold(pos_scores, rows[pos_tok], beta_nthr)

    factor = resolve_eta(eta, float(correct.float().mean()))
    picked = torch.zeros_like(m)
    picked[neg_tok] = neg_scores > tau
    selected = picked & (advantages < 0)[:, None]
    weights[selected] = factor
    return GroupWeights(weights, selected, neg_scores, tau, factor)
