"""FP4Linear: an nn.Linear whose three GEMMs see FP4 fake-quantized operands.

    forward  y  = Q(x) Q(W)^T + b        x, W blocked along K (in features)
    dgrad    dx = Q(dy) Q(W^T)^T         dy, W blocked along N (out features)
    wgrad    dW = Q(dy^T) Q(x^T)^T       dy, x blocked along M (tokens)

Quantization happens inside one autograd Function; the high-precision x and W are saved and
re-quantized in backward along each GEMM's reduction axis, so every block runs along K of its
GEMM. GEMM outputs, the bias, master weights and optimizer states stay in high precision.
Parameters are the parent's ``weight``/``bias``, so state_dict keys equal nn.Linear's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_reason.precision import formats
from lit_reason.precision.quantize import quantize


@dataclass
class FP4Settings:
    """Mutable settings shared by the plugin and all its FP4Linear layers.

    quantize_weights / quantize_activations / quantize_gradients: per-operand switches.
    *_rounding: rounding of x and W in forward, of dy (dgrad and wgrad), of x^T in wgrad
        (W in dgrad always rounds to nearest, as in forward). Defaults follow the paper:
        nearest forward, stochastic backward and update.
    qaf: quantization-aware fine-tuning: forward stays FP4, dgrad and wgrad use the
        high-precision operands (the quantizer is a straight-through estimator).
    enabled: False turns every FP4Linear into a plain linear (used by tests and the monitor).
    """

    fmt: str = "nvfp4"
    mx_scale: str = "ocp"
    quantize_weights: bool = True
    quantize_activations: bool = True
    quantize_gradients: bool = True
    activation_rounding: str = "nearest"
    weight_rounding: str = "nearest"
    gradient_rounding: str = "stochastic"
    wgrad_activation_rounding: str = "stochastic"
    qaf: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        for r in (self.activation_rounding, self.weight_rounding, self.gradient_rounding,
                  self.wgrad_activation_rounding):
            formats.check_args(self.fmt, r, self.mx_scale)


def _q(t: Tensor, on: bool, rounding: str, s: FP4Settings) -> Tensor:
    return quantize(t, s.fmt, rounding, mx_scale=s.mx_scale) if on else t


def _qT(t: Tensor, on: bool, rounding: str, s: FP4Settings) -> Tensor:
    """Quantize a 2-D tensor blocked along its first dimension (i.e. along rows of t^T)."""
    return _q(t.t(), on, rounding, s).t() if on else t


class FP4LinearFunction(torch.autograd.Function):
    """y = x W^T + b with FP4 operands; see the module docstring for which operand is quantized how."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, settings: FP4Settings,
                compute_dtype: torch.dtype) -> Tensor:
        s = settings
        x2 = x.reshape(-1, x.shape[-1]).to(compute_dtype)
        w = weight.to(compute_dtype)
        xq = _q(x2, s.quantize_activations, s.activation_rounding, s)
        wq = _q(w, s.quantize_weights, s.weight_rounding, s)
        y = xq @ wq.t()
        if bias is not None:
            y = y + bias.to(compute_dtype)
        ctx.save_for_backward(x2, weight)
        ctx.settings, ctx.compute_dtype, ctx.has_bias = s, compute_dtype, bias is not None
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x2, weight = ctx.saved_tensors
        s, dt = ctx.settings, ctx.compute_dtype
        dy = grad_out.reshape(-1, grad_out.shape[-1]).to(dt)
        w = weight.to(dt)
        hp = s.qaf  # QAF: backward and update in high precision
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            dyq = _q(dy, s.quantize_gradients and not hp, s.gradient_rounding, s)  # along N
            wq = _qT(w, s.quantize_weights and not hp, s.weight_rounding, s)  # W^T along N
            grad_x = (dyq @ wq).reshape(ctx.x_shape).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            dyTq = _qT(dy, s.quantize_gradients and not hp, s.gradient_rounding, s)  # along M
            xTq = _qT(x2, s.quantize_activations and not hp, s.wgrad_activation_rounding, s)
            grad_w = (dyTq.t() @ xTq).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = dy.sum(0).to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None


def compute_dtype_for(x: Tensor) -> torch.dtype:
    """The dtype the GEMMs run in: the autocast dtype when autocast is on for x's device."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


class FP4Linear(nn.Linear):
    """Drop-in nn.Linear with FP4 GEMMs; build one from an existing layer with ``from_linear``."""

    settings: FP4Settings

    @classmethod
    def from_linear(cls, linear: nn.Linear, settings: FP4Settings) -> "FP4Linear":
        """Wrap ``linear``'s own Parameters (no copy, same names) in an FP4Linear."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.settings = settings
        new.train(linear.training)
        return new

    def forward(self, x: Tensor) -> Tensor:
        if not self.settings.enabled:
            return super().forward(x)
        dt = compute_dtype_for(x)
        with torch.autocast(x.device.type, enabled=False):
            return FP4LinearFunction.apply(x, self.weight, self.bias, self.settings, dt)

    def extra_repr(self) -> str:
        s = self.settings
        return f"{super().extra_repr()}, fmt={s.fmt}, qaf={s.qaf}"
