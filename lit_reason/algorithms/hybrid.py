"""HRPO's hybrid latent input (arXiv 2505.18454): a learnable gate that blends the sampled token's
embedding with a latent vector built from the previous output distribution.

    p = softmax(logits / tau)            h = E^T p / ||p||_2          (E: input embedding table)
    r = sigmoid(W_r e + b_r)             i = sigmoid(W_i e + b_i)     (e: sampled token's embedding)
    a = exp(-c * softplus(Lambda) * r)   input = a * e + sqrt(1 - a^2) * (i * h)

Nothing here touches a model's code: the gate produces ``inputs_embeds``, which every Hugging Face
decoder accepts. The gate is a plain ``nn.Module`` held by the LightningModule, so it checkpoints
with it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def latent_from_logits(logits: Tensor, embedding_weight: Tensor, tau: float = 0.5) -> Tensor:
    """``h = E^T p / ||p||_2`` with ``p = softmax(logits / tau)``, returned in float32.

    ``logits`` is ``[..., V]``, ``embedding_weight`` is ``E`` ``[V, H]``; the result is ``[..., H]``.
    Computed as ``p @ E`` in E's own dtype (``p`` is cast to it; the table is never copied, which for
    a bf16 1.5B model was ~0.9 GB per decoded token) and never a ``[..., V, H]`` tensor. The softmax
    and the norm are float32. A one-hot ``p`` gives that token's row of E.
    """
    if tau <= 0:
        raise ValueError(f"latent temperature tau must be > 0, got {tau}")
    p = torch.softmax(logits.float() / tau, dim=-1)
    return (p.to(embedding_weight.dtype) @ embedding_weight).float() / p.norm(dim=-1, keepdim=True)


def inverse_softplus(y: Tensor) -> Tensor:
    """``x`` with ``softplus(x) = y`` (y > 0), stable for the tiny y the gate starts from."""
    return torch.where(y > 20, y, torch.log(torch.expm1(y)))


class HybridGate(nn.Module):
    """The gate ``(e, h) -> a * e + sqrt(1 - a^2) * (i * h)``.

    Args:
        hidden_size: width of the embeddings.
        c: the fixed scale of the decay exponent (8 in the paper).
        r_min, r_max: ``Lambda`` starts so that ``exp(-c * softplus(Lambda))`` is uniform in
            ``[r_min, r_max]``; since ``r = sigmoid(.) < 1``, ``a`` starts above ``r_min``, i.e. the
            inputs start close to plain token embeddings and the latent share grows by learning.
    """

    def __init__(self, hidden_size: int, c: float = 8.0, r_min: float = 0.99, r_max: float = 0.999) -> None:
        super().__init__()
        if not 0.0 < r_min <= r_max < 1.0:
            raise ValueError(f"gate init needs 0 < r_min <= r_max < 1, got r_min={r_min}, r_max={r_max}")
        self.c, self.r_min, self.r_max = float(c), float(r_min), float(r_max)
        self.W_r = nn.Linear(hidden_size, hidden_size, bias=True)
        self.W_i = nn.Linear(hidden_size, hidden_size, bias=True)
        self.Lambda = nn.Parameter(torch.zeros(hidden_size))
        self.reset_lambda()

    @torch.no_grad()
    def reset_lambda(self) -> None:
        """Draw ``a0 = exp(-c * softplus(Lambda))`` uniform in ``[r_min, r_max]`` and invert it."""
        a0 = torch.empty_like(self.Lambda).uniform_(self.r_min, self.r_max)
        self.Lambda.copy_(inverse_softplus(-torch.log(a0) / self.c))

    def decay(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, sqrt(1 - a^2))`` for embeddings ``e`` ``[..., H]`` (the latter via expm1: exact near a = 1)."""
        r = torch.sigmoid(self.W_r(e))
        log_a = -self.c * nn.functional.softplus(self.Lambda) * r
        share = torch.sqrt((-torch.expm1(2.0 * log_a)).clamp_min(1e-30))
        return torch.exp(log_a), share

    def forward(self, e: Tensor, h: Tensor, mix: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Blend embeddings ``e`` with latents ``h`` (both ``[..., H]``) where ``mix`` (``[...]`` bool) is set.

        Returns ``(inputs, a)``: the inputs in ``e``'s dtype (plain ``e`` where ``mix`` is False) and
        the per-element gate ``a`` in float32 (1 where not mixed). Math runs in the gate's dtype.
        """
        dtype = self.Lambda.dtype
        e32, h32 = e.to(dtype), h.to(dtype)
        a, share = self.decay(e32)
        i = torch.sigmoid(self.W_i(e32))
        mixed = a * e32 + share * (i * h32)
        if mix is not None:
            keep = mix[..., None]
            mixed = torch.where(keep, mixed, e32)
            a = torch.where(keep, a, torch.ones_like(a))
        return mixed.to(e.dtype), a


def hybrid_inputs_embeds(model: nn.Module, gate: HybridGate, input_ids: Tensor, latents: Tensor | None,
                         mix: Tensor | None) -> Tensor:
    """``inputs_embeds`` for any HF decoder: plain embeddings of ``input_ids`` ``[B, T]``, blended
    with ``latents`` ``[B, T, H]`` where ``mix`` ``[B, T]`` is set, by the gate's current parameters.
    Gradients reach the gate and the embedding table, never the stored latents."""
    embeds = model.get_input_embeddings()(input_ids)
    if latents is None or mix is None or not bool(mix.any()):
        return embeds
    return gate(embeds, latents.detach(), mix.bool())[0]  # latents are constants: no gradient into p


def gate_init_bound(r_min: float) -> float:
    """Largest latent share ``sqrt(1 - a^2)`` possible at initialisation (a > r_min)."""
    return math.sqrt(1.0 - r_min**2)
