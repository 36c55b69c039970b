"""Per-token statistics of the LM head with memory bounded by the chunk, not by ``[N, V]``.

From final hidden states ``h [N, H]`` and the head ``W [V, H]`` (bias ``b`` optional), with
``z = (h W^T + b) / T`` (T the sampling temperature):

    logp   = z[target] - logsumexp(z)
    lse    = logsumexp(z)                                   (NTHR reads probabilities from it)
    entropy = -sum softmax(z) log softmax(z)
    certainty = logsumexp(zc) - mean(zc) - log V,  zc = (h W^T + b) / T_c   (Intuitor, KL(U || p))

:class:`ChunkedHead` computes them ``chunk_size`` positions x ``vocab_chunk_size`` vocabulary
columns at a time (an online log-sum-exp over the vocabulary blocks) and saves only ``h``, ``W``
and a few ``[N]`` vectors for backward, where each block's logits are recomputed. So the memory
beyond the inputs and their gradients is a few ``chunk_size x vocab_chunk_size`` float32 blocks,
whatever N and V are: no ``[N, V]`` logits, no float32 copy of them, no temperature copy.
``fp32=True`` (``cast_lm_head_to_fp32``) computes each block's logits from float32 casts of that
block of ``h`` and ``W`` instead of the model dtype (the head's matmul in full precision).

The model side (finding the head, the backbone's hidden states, LoRA's adapters-off view) is in
:mod:`lit_reason.models.causal_lm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: vocabulary columns per block: a 1024 x 16384 float32 block is 64 MB
VOCAB_CHUNK = 16384


@dataclass
class HeadStats:
    """Per-position results (float32, shaped like the targets). ``entropy``/``certainty`` are None
    when not asked for."""

    logps: Tensor
    lse: Tensor
    entropy: Tensor | None = None
    certainty: Tensor | None = None


def _spans(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _compute_dtype(hidden: Tensor, fp32: bool) -> torch.dtype:
    """The matmul dtype: float32 when asked; else autocast's (if active) or the hidden states'."""
    if fp32:
        return torch.float32
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


def _block_logits(h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``h @ w^T (+ b)`` in the dtype of ``w``, returned in float32 (float64 for float64 inputs)."""
    z = h.to(w.dtype) @ w.T
    if b is not None:
        z = z + b.to(w.dtype)
    return z.to(torch.promote_types(z.dtype, torch.float32))


class ChunkedHead(torch.autograd.Function):
    """``(hidden [N, H], weight [V, H], bias [V] | None, targets [N]) -> (logp, lse, entropy,
    certainty)``, each ``[N]`` float32 (entropy / certainty empty when not requested), with exact
    gradients for hidden, weight and bias; each block of logits is recomputed in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, certainty_temperature, want_entropy,
                chunk_size, vocab_chunk_size, fp32):
        dtype = _compute_dtype(hidden, fp32)
        n, vocab = hidden.shape[0], weight.shape[0]
        f32 = dict(dtype=torch.promote_types(dtype, torch.float32), device=hidden.device)
        want_cert = certainty_temperature is not None
        run_max = torch.full((n,), -math.inf, **f32)
        run_sum = torch.zeros(n, **f32)  # sum exp(z - max)
        run_zsum = torch.zeros(n, **f32) if want_entropy else None  # sum exp(z - max) (z - max)
        target_z = torch.zeros(n, **f32)
        if want_cert:
            c_max, c_sum, raw_sum = torch.full((n,), -math.inf, **f32), torch.zeros(n, **f32), torch.zeros(n, **f32)
        with torch.autocast(hidden.device.type, enabled=False):
            for cols in _spans(vocab, vocab_chunk_size):
                w = weight[cols].to(dtype)
                b = None if bias is None else bias[cols]
                for rows in _spans(n, chunk_size):
                    # at most two blocks live: the logits (scaled and shifted in place) and their exp
                    z = _block_logits(hidden[rows], w, b)
                    if want_cert:  # from the raw logits, before they are scaled in place
                        raw_sum[rows] += z.sum(1)
                        c_new = torch.maximum(c_max[rows], z.amax(1) / certainty_temperature)
                        zc = (z / certainty_temperature).sub_(c_new[:, None]).exp_()
                        c_sum[rows] = c_sum[rows] * torch.exp(c_max[rows] - c_new) + zc.sum(1)
                        c_max[rows] = c_new
                        del zc
                    if temperature != 1.0:
                        z.div_(temperature)
                    local = targets[rows] - cols.start
                    inside = (local >= 0) & (local < z.shape[1])
                    picked = z.gather(1, local.clamp(0, z.shape[1] - 1)[:, None]).squeeze(1)
                    target_z[rows] += torch.where(inside, picked, torch.zeros_like(picked))
                    new_max = torch.maximum(run_max[rows], z.amax(1))
                    scale = torch.exp(run_max[rows] - new_max)
                    shifted = z.sub_(new_max[:, None])
                    e = shifted.exp()
                    if want_entropy:
                        # keep sum e (z - max) relative to the new max: u' = s (u + s0 (m - m'))
                        old_sum = run_sum[rows]
                        moved = torch.where(old_sum > 0, old_sum * (run_max[rows] - new_max), torch.zeros_like(old_sum))
                        dot = torch.bmm(e.unsqueeze(1), shifted.unsqueeze(2)).view(-1)  # row-wise, no third block
                        run_zsum[rows] = scale * (run_zsum[rows] + moved) + dot
                    run_sum[rows] = run_sum[rows] * scale + e.sum(1)
                    run_max[rows] = new_max
                    del z, shifted, e
        # run_max is -inf only for rows with no columns (V = 0), which the callers never pass
        lse = run_max + run_sum.log()
        logp = target_z - lse
        entropy = run_sum.log() - run_zsum / run_sum if want_entropy else lse.new_empty(0)
        if want_cert:
            c_lse = c_max + c_sum.log()
            certainty = c_lse - raw_sum / vocab / certainty_temperature - math.log(vocab)
        else:
            c_lse, certainty = lse.new_empty(0), lse.new_empty(0)
        ctx.save_for_backward(hidden, weight, bias, targets, lse, entropy, c_lse)
        ctx.cfg = (temperature, certainty_temperature, chunk_size, vocab_chunk_size, dtype)
        ctx.set_materialize_grads(False)
        if not want_entropy:
            ctx.mark_non_differentiable(entropy)
        if not want_cert:
            ctx.mark_non_differentiable(certainty)
        return logp, lse, entropy, certainty

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_logp, g_lse, g_ent, g_cert):
        hidden, weight, bias, targets, lse, entropy, c_lse = ctx.saved_tensors
        temperature, cert_t, chunk_size, vocab_chunk_size, dtype = ctx.cfg
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        if g_ent is not None and entropy.numel() == 0:
            g_ent = None
        if g_cert is not None and c_lse.numel() == 0:
            g_cert = None
        n, vocab = hidden.shape[0], weight.shape[0]
        # the coefficient of p in dL/dz: g_lse - g_logp (the one-hot part is added separately)
        p_coef = None
        if g_logp is not None or g_lse is not None:
            zero = lse.new_zeros(n)
            p_coef = (zero if g_lse is None else g_lse) - (zero if g_logp is None else g_logp)
        acc = torch.promote_types(dtype, torch.float32)
        grad_h = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_h else None
        grad_w = torch.empty_like(weight) if need_w else None
        grad_b = torch.empty_like(bias) if need_b else None
        with torch.autocast(hidden.device.type, enabled=False):
            for cols in _spans(vocab, vocab_chunk_size):
                w = weight[cols].to(dtype)
                b = None if bias is None else bias[cols]
                gw = torch.zeros(w.shape, dtype=acc, device=w.device) if need_w else None
                gb = torch.zeros(w.shape[0], dtype=acc, device=w.device) if need_b else None
                for rows in _spans(n, chunk_size):
                    # the block's logits, recomputed; worked on in place (two blocks live at most,
                    # three when self-certainty has a gradient)
                    z = _block_logits(hidden[rows], w, b)
                    cert_part = None
                    if g_cert is not None:  # d/draw (lse(raw/Tc) - mean(raw)/Tc) = (softmax(raw/Tc) - 1/V) / Tc
                        cert_part = (z / cert_t).sub_(c_lse[rows, None]).exp_().sub_(1.0 / vocab)
                        cert_part.mul_(g_cert[rows, None] / cert_t)
                    logp = z.div_(temperature).sub_(lse[rows, None])
                    p = logp.exp()
                    coef = p_coef[rows, None] if p_coef is not None else 0.0
                    if g_ent is not None:  # dH/dz_j = -p_j (log p_j + H): dz = p (coef - g_ent (log p + H))
                        d_raw = logp.add_(entropy[rows, None]).mul_(-g_ent[rows, None]).add_(coef).mul_(p)
                        del p
                    else:
                        d_raw = p.mul_(coef)
                        del logp
                    if g_logp is not None:  # the one-hot part of d logp / dz (no host sync: a masked scatter)
                        local = targets[rows] - cols.start
                        inside = (local >= 0) & (local < d_raw.shape[1])
                        add = torch.where(inside, g_logp[rows], torch.zeros_like(g_logp[rows])).to(d_raw.dtype)
                        d_raw.scatter_add_(1, local.clamp(0, d_raw.shape[1] - 1)[:, None], add[:, None])
                    if temperature != 1.0:
                        d_raw.div_(temperature)  # dL/draw = dL/dz / T
                    if cert_part is not None:
                        d_raw += cert_part
                        del cert_part
                    d_low = d_raw.to(dtype)
                    if need_h:
                        grad_h[rows] += (d_low @ w).to(acc)
                    if need_w:
                        gw += (d_low.T @ hidden[rows].to(dtype)).to(acc)
                    if need_b:
                        gb += d_raw.sum(0)
                    del d_raw, d_low
                if need_w:
                    grad_w[cols] = gw.to(weight.dtype)
                if need_b:
                    grad_b[cols] = gb.to(bias.dtype)
        grad_h = grad_h.to(hidden.dtype) if need_h else None
        return grad_h, grad_w, grad_b, None, None, None, None, None, None, None


def chunked_head_stats(hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None = None, *,
                       temperature: float = 1.0, entropy: bool = False, certainty_temperature: float | None = None,
                       chunk_size: int = 1024, vocab_chunk_size: int = VOCAB_CHUNK, fp32: bool = False) -> HeadStats:
    """:class:`ChunkedHead` on ``hidden [..., H]`` and ``targets [...]`` (any leading shape).

    ``temperature`` divides the logits of logp / lse / entropy (the sampling temperature);
    ``certainty_temperature`` (None = no self-certainty) is Intuitor's ``T`` in ``KL(U || softmax(z / T))``.
    """
    if chunk_size < 1 or vocab_chunk_size < 1:
        raise ValueError(f"chunk sizes must be >= 1 (got {chunk_size}, {vocab_chunk_size})")
    if temperature <= 0 or (certainty_temperature is not None and certainty_temperature <= 0):
        raise ValueError("temperatures must be > 0")
    shape = targets.shape
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    logp, lse, ent, cert = ChunkedHead.apply(flat_h, weight, bias, targets.reshape(-1), float(temperature),
                                             None if certainty_temperature is None else float(certainty_temperature),
                                             bool(entropy), int(chunk_size), int(vocab_chunk_size), bool(fp32))
    return HeadStats(logp.reshape(shape), lse.reshape(shape), ent.reshape(shape) if entropy else None,
                     cert.reshape(shape) if certainty_temperature is not None else None)


def restricted_probs_from_head(hidden: Tensor, weight: Tensor, columns: Tensor, lse: Tensor,
                               bias: Tensor | None = None, temperature: float = 1.0, fp32: bool = False) -> Tensor:
    """``softmax(z)[..., columns]`` ``[N, S]`` float32 from hidden states ``[N, H]`` and their
    ``lse`` ``[N]`` (from :func:`chunked_head_stats`): only the S columns' logits are computed."""
    dtype = _compute_dtype(hidden, fp32)
    with torch.autocast(hidden.device.type, enabled=False):
        z = _block_logits(hidden, weight[columns].to(dtype), None if bias is None else bias[columns])
    return torch.exp(z / temperature - lse[:, None])
