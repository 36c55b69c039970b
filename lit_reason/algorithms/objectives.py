"""The math of GRPO and its variants, as pure functions on tensors.

Shapes: B sequences (a rollout batch, G consecutive completions per prompt), T completion tokens,
V vocabulary. ``mask`` is 1 on completion tokens up to and including the first EOS.
Every function here has a test that checks it against numbers worked out by hand.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo")
REWARD_SCALES = ("group", "batch", "none")
#: ``token``: one importance ratio per token (GRPO); ``sequence``: one per completion (GSPO)
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


# --------------------------------------------------------------------------- advantages
def group_advantages(rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """Group-relative advantages ``(r - mean_group) / (std + eps)``.

    Args:
        rewards: ``[B]`` with B a multiple of ``group_size``; NaN marks a missing reward (a reward
            function returned None): it is left out of its group's mean and std and gets advantage 0.
        scale: ``group`` (std within the group, Bessel-corrected as the reference trainer does),
            ``batch`` (one std over the whole batch), ``none`` (Dr. GRPO: no division).
    """
    if scale not in REWARD_SCALES:
        raise ValueError(f"scale_rewards={scale!r}: choose one of {REWARD_SCALES}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.reshape(-1, group_size).double()
    valid = ~torch.isnan(r)
    count = valid.sum(-1, keepdim=True)
    filled = torch.where(valid, r, torch.zeros_like(r))
    mean = filled.sum(-1, keepdim=True) / count.clamp_min(1)
    centred = torch.where(valid, r - mean, torch.zeros_like(r))
    if scale == "group":
        var = (centred**2).sum(-1, keepdim=True) / (count - 1).clamp_min(1)
        adv = centred / (var.sqrt() + eps)
    elif scale == "batch":
        flat = r[valid]
        std = flat.std() if flat.numel() > 1 else flat.new_zeros(())
        adv = centred / (std + eps)
    else:
        adv = centred
    return adv.reshape(rewards.shape).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def zero_std_groups(rewards: Tensor, group_size: int) -> Tensor:
    """``[B / G]`` bool: groups whose (non-missing) rewards are all equal, so every advantage is 0."""
    r = rewards.reshape(-1, group_size)
    lo = torch.where(torch.isnan(r), torch.full_like(r, math.inf), r).min(-1).values
    hi = torch.where(torch.isnan(r), torch.full_like(r, -math.inf), r).max(-1).values
    return ~(hi > lo)


# --------------------------------------------------------------------------- per-token terms
def kl_k3(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || ref): ``exp(d) - d - 1`` with ``d = ref - logp`` (>= 0)."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def _chunks(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


def _position_views(logits: Tensor) -> list[Tensor]:
    """Views ``[n, V]`` that cover every position of ``logits [..., V]`` in order, never a copy.

    ``reshape(-1, V)`` silently copies a time-sliced ``logits[:, :-1]`` (what the training forward
    yields), i.e. a second full ``[B, T, V]`` tensor; falling back to one view per row avoids that.
    """
    try:
        return [logits.view(-1, logits.shape[-1])]
    except RuntimeError:
        return [view for row in logits.unbind(0) for view in _position_views(row)]


def _float32_blocks(logits: Tensor, chunk_size: int):
    """Yield ``(positions, block)``: a slice into the flattened positions of ``logits [..., V]`` and
    the float32 copy of at most ``chunk_size`` of them. The only float32 memory is one chunk."""
    offset = 0
    for view in _position_views(logits):
        for s in _chunks(view.shape[0], chunk_size):
            yield slice(offset + s.start, offset + s.stop), view[s].float()
        offset += view.shape[0]


def token_logps(logits: Tensor, token_ids: Tensor, chunk_size: int = 1024) -> Tensor:
    """``log softmax(logits)[token]`` per position, in float32, without a full float32 copy.

    ``logits`` is ``[..., V]`` in any dtype (already divided by the temperature), possibly a
    non-contiguous slice; the log-sum-exp runs ``chunk_size`` positions at a time so long
    completions never materialise ``[B, T, V]`` float32 tensors.
    """
    flat_ids = token_ids.reshape(-1)
    out = torch.empty(flat_ids.shape, dtype=torch.float32, device=logits.device)
    for pos, block in _float32_blocks(logits, chunk_size):
        out[pos] = block.gather(-1, flat_ids[pos, None]).squeeze(-1) - torch.logsumexp(block, dim=-1)
    return out.reshape(token_ids.shape)


def _block_entropy(block: Tensor) -> Tensor:
    """``-sum p log p`` of ``softmax(block)`` per row, as ``log S - sum(e * z) / S`` with
    ``z = block - max``, ``e = exp(z)``, ``S = sum(e)``: one exp over the block and two reductions
    (``log_softmax`` + ``exp`` + product made three full passes and three full temporaries). The
    shift by the row max keeps both terms small, so peaked rows lose no precision; the max is
    detached (the entropy does not depend on it), so the gradient is the exact one."""
    shifted = block - block.detach().amax(-1, keepdim=True)
    e = shifted.exp()
    total = e.sum(-1)
    if torch.is_grad_enabled() and shifted.requires_grad:
        weighted = (e * shifted).sum(-1)
    else:
        weighted = shifted.mul_(e).sum(-1)  # no graph to keep: reuse the temporary
    return total.log() - weighted / total


def _row_views(logits: Tensor) -> list[Tensor]:
    """Views ``[T, V]`` of every row of ``logits [..., T, V]`` in order (never a copy)."""
    return [logits] if logits.dim() == 2 else [view for row in logits.unbind(0) for view in _row_views(row)]


def token_entropy(logits: Tensor, chunk_size: int = 1024, mask: Tensor | None = None) -> Tensor:
    """Entropy of ``softmax(logits)`` per position, float32, chunked like :func:`token_logps`.

    ``mask`` (shape ``logits.shape[:-1]``, optional): positions where it is 0 are 0 in the result
    and cost nothing up to the last counted position of each row, so the padding after each
    completion's end is never computed (the counted positions get the same values as without it).
    """
    if mask is None:
        out = torch.empty(logits.shape[:-1].numel(), dtype=torch.float32, device=logits.device)
        for pos, block in _float32_blocks(logits, chunk_size):
            out[pos] = _block_entropy(block)
        return out.reshape(logits.shape[:-1])
    if mask.shape != logits.shape[:-1]:
        raise ValueError(f"token_entropy: mask {tuple(mask.shape)} does not match logits {tuple(logits.shape)} minus vocab")
    if logits.dim() < 2:
        raise ValueError("token_entropy: a mask needs logits of shape [..., T, V]")
    width = logits.shape[-2]
    counted = (mask != 0).reshape(-1, width)
    # one host sync for all rows: each row's end = 1 + its last counted position (0 if none)
    ends = torch.where(counted.any(-1), width - counted.flip(-1).int().argmax(-1), 0).tolist()
    out = torch.zeros(counted.numel(), dtype=torch.float32, device=logits.device)
    for row, (view, end) in enumerate(zip(_row_views(logits), ends)):
        for s in _chunks(end, chunk_size):
            out[row * width + s.start : row * width + s.stop] = _block_entropy(view[s].float())
    out = torch.where(counted.reshape(-1), out, torch.zeros_like(out))  # holes before a row's end
    return out.reshape(logits.shape[:-1])


def self_certainty(logits: Tensor, mask: Tensor, temperature: float = 1.0, chunk_size: int = 1024) -> Tensor:
    """Intuitor's self-certainty per completion: mean over its tokens of ``KL(U || softmax(z / T))``.

    Position t's logits are the distribution that scored token t (the caller aligns them).
    ``KL(U || p) = logsumexp(z) - mean(z) - log V``: zero for uniform logits, growing as they sharpen.
    Computed in float32 chunks of ``chunk_size`` positions (no second [B, T, V] copy, even for a
    non-contiguous slice). Returns ``[B]``; a completion with no unmasked token gets 0, and masked
    positions never leak in (not even inf/NaN logits there).
    """
    if logits.shape[:-1] != mask.shape:
        raise ValueError(f"self_certainty: logits {tuple(logits.shape)} do not match mask {tuple(mask.shape)} + (vocab,)")
    vocab = logits.shape[-1]
    per_token = torch.empty(mask.numel(), dtype=torch.float32, device=logits.device)
    for pos, block in _float32_blocks(logits, chunk_size):
        block = block / temperature
        per_token[pos] = torch.logsumexp(block, dim=-1) - block.mean(-1) - math.log(vocab)
    keep = mask.reshape(-1) != 0
    per_token = torch.where(keep, per_token, torch.zeros_like(per_token)).reshape(mask.shape)
    return per_token.sum(-1) / keep.reshape(mask.shape).sum(-1).clamp_min(1)


# --------------------------------------------------------------------------- token selection
def linear_quantile(values: Tensor, q: float) -> Tensor:
    """``torch.quantile(values, q)`` (linear interpolation) for a 1-D tensor of any length
    (``torch.quantile`` refuses inputs of more than 2**24 elements)."""
    ordered = values.double().sort().values
    pos = q * (ordered.numel() - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return (ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)).to(values.dtype)


def high_entropy_mask(entropy: Tensor, mask: Tensor, top_quantile: float, pool: Tensor | None = None) -> Tensor:
    """Bool ``[B, T]``: the counted tokens whose entropy is in the top ``top_quantile`` share
    ("Beyond the 80/20 rule", arXiv 2506.01939; the reference trainer's ``top_entropy_quantile``).

    The threshold is the ``1 - top_quantile`` linear quantile of ``pool`` (default: the entropies of
    the counted tokens; under DDP the caller passes every rank's); a token is kept when its entropy
    is >= the threshold. ``top_quantile`` 1 keeps every token, 0 only the highest-entropy one(s).
    """
    if not 0.0 <= top_quantile <= 1.0:
        raise ValueError(f"top_entropy_quantile must be in [0, 1], got {top_quantile}")
    counted = mask != 0
    pool = entropy[counted] if pool is None else pool
    if pool.numel() == 0:
        return torch.zeros_like(counted)
    threshold = linear_quantile(pool.float(), 1.0 - top_quantile)
    return (entropy * counted >= threshold) & counted


# --------------------------------------------------------------------------- the loss
def loss_normalizer(mask: Tensor, loss_type: str, max_completion_length: int | None = None) -> float:
    """The denominator each loss type divides its summed terms by, for one batch.

    ``grpo`` sums per-sequence means, so it divides by the number of sequences; ``bnpo``/``dapo``
    divide the token sum by the token count (for ``dapo`` the caller passes the global count);
    ``dr_grpo`` by ``num_sequences * max_completion_length``; ``cispo`` like ``dapo``.
    """
    if loss_type == "grpo":
        return float(mask.shape[0])
    if loss_type in ("bnpo", "dapo", "cispo"):
        return max(float(mask.sum()), 1.0)
    if loss_type == "dr_grpo":
        return float(mask.shape[0] * (max_completion_length or mask.shape[1]))
    raise ValueError(f"loss_type={loss_type!r}: choose one of {LOSS_TYPES}")


def policy_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    loss_type: str = "grpo",
    eps_low: float = 0.2,
    eps_high: float | None = None,
    ref_logps: Tensor | None = None,
    beta: float = 0.0,
    token_weights: Tensor | None = None,
    max_completion_length: int | None = None,
    normalizer: float | None = None,
    importance_sampling_level: str = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate + optional k3 KL, aggregated by ``loss_type``.

    Per token: ``-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) * w + beta * KL`` with
    ``rho = exp(logp - old_logp)`` and ``w`` the token weights (NTHR; 1 by default).

    ``importance_sampling_level="sequence"`` (GSPO): one ratio per completion,
    ``rho = exp(mean_t (logp - old_logp))`` over its tokens (the geometric mean of the token
    ratios), clipped per sequence. ``loss_type="cispo"`` (CISPO): per token
    ``-sg(min(rho, eps_high)) * A * logp * w``: the clipped, stop-gradient weight scales a
    REINFORCE term, so no token's gradient is ever cut; ``eps_high`` is the cap on the ratio
    itself (about 5), not an offset from 1; summed over tokens and divided like ``dapo``.

    Args:
        advantages: ``[B]`` per sequence or ``[B, T]`` per token.
        normalizer: overrides the denominator of :func:`loss_normalizer` (micro-batching, and the
            global token count for ``dapo`` under DDP).
    Returns:
        ``(loss, metrics)``; metrics are detached masked means: ``kl``, ``clip_ratio/low_mean``,
        ``clip_ratio/high_mean``, ``clip_ratio/region_mean`` (``cispo``: ``cispo_clip_ratio``;
        at sequence level the clip ratios count sequences, as the reference trainer does).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: choose one of {LOSS_TYPES}")
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"importance_sampling_level={importance_sampling_level!r}: choose one of {IMPORTANCE_SAMPLING_LEVELS}")
    if loss_type == "cispo" and eps_high is None:
        raise ValueError("loss_type=cispo needs eps_high: the cap on the importance weight (about 5.0)")
    eps_high = eps_low if eps_high is None else eps_high
    mask = mask.to(logps.dtype)
    adv = advantages if advantages.dim() == 2 else advantages[:, None]
    log_ratio = logps - old_logps
    if importance_sampling_level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp_min(1))[:, None]  # [B, 1]
    ratio = torch.exp(log_ratio)
    if loss_type == "cispo":
        per_token = -torch.clamp(ratio, max=eps_high).detach() * adv * logps
    else:
        clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
        per_token = -torch.min(ratio * adv, clipped * adv)
    if token_weights is not None:
        per_token = per_token * token_weights
    kl = None
    if ref_logps is not None and beta != 0.0:
        kl = kl_k3(logps, ref_logps)
        per_token = per_token + beta * kl

    if loss_type == "grpo":
        total = ((per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1)).sum()
    else:
        total = (per_token * mask).sum()
    denom = normalizer if normalizer is not None else loss_normalizer(mask, loss_type, max_completion_length)
    loss = total / denom

    with torch.no_grad():
        n = mask.sum().clamp_min(1)

        def masked_mean(x: Tensor) -> Tensor:  # sequence level: one value per sequence
            x = x.to(mask.dtype)
            per_sequence = importance_sampling_level == "sequence" and x.shape[-1] == 1
            return x.sum() / max(x.shape[0], 1) if per_sequence else (x * mask).sum() / n

        if loss_type == "cispo":
            metrics = {"cispo_clip_ratio": masked_mean((ratio > eps_high) & (adv > 0))}
        else:
            low, high = (ratio < 1 - eps_low) & (adv < 0), (ratio > 1 + eps_high) & (adv > 0)
            metrics = {
                "clip_ratio/low_mean": masked_mean(low),
                "clip_ratio/high_mean": masked_mean(high),
                "clip_ratio/region_mean": masked_mean(low | high),
            }
        if kl is not None:
            metrics["kl"] = (kl * mask).sum() / n
    return loss, metrics
