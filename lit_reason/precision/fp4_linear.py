"""FP4Linear: an nn.Linear whose three GEMMs see FP4 fake-quantized operands.

    forward  y  = Q(x) Q(W)^T + b        x, W blocked along K (in features)
    dgrad    dx = Q(dy) Q(W^T)^T         dy, W blocked along N (out features)
    wgrad    dW = Q(dy^T) Q(x^T)^T       dy, x blocked along M (tokens)

Quantization happens inside one autograd Function; the high-precision x and W are saved and
re-quantized in backward along each GEMM's reduction axis, so every block runs along K of its
GEMM. GEMM outputs, the bias, master weights and optimizer states stay in high precision.
Parameters are the parent's ``weight``/``bias``, so state_dict keys equal nn.Linear's.

Per layer (``FP4LayerState``, not in the state_dict): its own rounding-noise stream
(``noise.py``), a cache of Q(W) per blocking axis valid while the weight is unchanged (keyed on
the weight's version counter and cleared by the plugin after every optimizer step), so W is
quantized once per optimizer step for forward, backward and every rollout decode token; a
per-layer QAF flag; and, while ``settings.measure_noise`` is on, the high-precision weight
gradient of the same backward (one extra GEMM) for the sqrt(3) rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lit_reason.precision import formats
from lit_reason.precision.noise import NoiseStream
from lit_reason.precision.quantize import quantize


@dataclass
class FP4Settings:
    """Mutable settings shared by the plugin and all its FP4Linear layers.

    quantize_weights / quantize_activations / quantize_gradients: per-operand switches.
    *_rounding: rounding of x and W in forward, of dy (dgrad and wgrad), of x^T in wgrad
        (W in dgrad always rounds to nearest, as in forward). Defaults follow the paper:
        nearest forward, stochastic backward and update.
    qaf: quantization-aware fine-tuning for every layer: forward stays FP4, dgrad and wgrad use
        the high-precision operands (the quantizer is a straight-through estimator).
    enabled: False turns every FP4Linear into a plain linear.
    seed / step: the rounding-noise seed and the optimizer step it is mixed with (the plugin
        advances ``step``). cache_weights: reuse Q(W) until the weight changes.
    measure_noise: record the high-precision weight gradient beside the FP4 one (set by the
        QuantizationNoiseMonitor on measurement steps).
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
    seed: int = 0
    step: int = 0
    cache_weights: bool = True
    measure_noise: bool = False

    def __post_init__(self) -> None:
        for r in (self.activation_rounding, self.weight_rounding, self.gradient_rounding,
                  self.wgrad_activation_rounding):
            formats.check_args(self.fmt, r, self.mx_scale)


@dataclass(eq=False)
class FP4LayerState:
    """What one FP4Linear keeps besides its parameters (see the module docstring)."""

    layer: int = 0
    qaf: bool = False
    noise: NoiseStream = field(default_factory=lambda: NoiseStream(0))
    hp_grad: Tensor | None = None  # accumulated weight gradients of measured steps: high
    fp4_grad: Tensor | None = None  # precision and FP4, summed over the step's backwards
    cache: dict = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0

    def __post_init__(self) -> None:
        self.noise = NoiseStream(self.layer)

    def clear_cache(self) -> None:
        self.cache.clear()

    def accumulate(self, g_hp: Tensor, g_fp4: Tensor) -> None:
        self.hp_grad = g_hp if self.hp_grad is None else self.hp_grad + g_hp
        self.fp4_grad = g_fp4 if self.fp4_grad is None else self.fp4_grad + g_fp4

    def take_gradients(self) -> tuple[Tensor | None, Tensor | None]:
        """The accumulated (g_hp, g_fp4), cleared."""
        out = (self.hp_grad, self.fp4_grad)
        self.hp_grad = self.fp4_grad = None
        return out


def _q(t: Tensor, on: bool, rounding: str, s: FP4Settings, st: FP4LayerState | None) -> Tensor:
    if not on:
        return t
    seed = st.noise.next_seed(s.seed, s.step) if rounding == "stochastic" and st is not None else None
    return quantize(t, s.fmt, rounding, mx_scale=s.mx_scale, seed=seed)


def _qT(t: Tensor, on: bool, rounding: str, s: FP4Settings, st: FP4LayerState | None) -> Tensor:
    """Quantize a 2-D tensor blocked along its first dimension (i.e. along rows of t^T)."""
    return _q(t.t(), on, rounding, s, st).t() if on else t


def quantized_weight(weight: Tensor, dtype: torch.dtype, transposed: bool, s: FP4Settings,
                     st: FP4LayerState | None) -> Tensor:
    """Q(W) (blocked along K) or Q(W^T)^T (blocked along N) in ``dtype``, from the layer's cache
    while the weight's version counter and storage are unchanged."""
    cacheable = st is not None and s.cache_weights and s.weight_rounding == "nearest"
    key = (transposed, dtype, s.fmt, s.mx_scale)
    stamp = (weight._version, weight.data_ptr(), tuple(weight.shape))
    if cacheable:
        hit = st.cache.get(key)
        if hit is not None and hit[0] == stamp:
            st.cache_hits += 1
            return hit[1]
        st.cache_misses += 1
    with torch.no_grad():
        w = weight.detach().to(dtype)
        wq = _qT(w, True, s.weight_rounding, s, st) if transposed else _q(w, True, s.weight_rounding, s, st)
    if cacheable:
        st.cache[key] = (stamp, wq)
    return wq


class FP4LinearFunction(torch.autograd.Function):
    """y = x W^T + b with FP4 operands; see the module docstring for which operand is quantized how."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, settings: FP4Settings,
                compute_dtype: torch.dtype, state: FP4LayerState | None = None) -> Tensor:
        s = settings
        x2 = x.reshape(-1, x.shape[-1]).to(compute_dtype)
        xq = _q(x2, s.quantize_activations, s.activation_rounding, s, state)
        wq = quantized_weight(weight, compute_dtype, False, s, state) if s.quantize_weights else weight.to(compute_dtype)
        y = xq @ wq.t()
        if bias is not None:
            y = y + bias.to(compute_dtype)
        ctx.save_for_backward(x2, weight)
        ctx.settings, ctx.compute_dtype, ctx.has_bias, ctx.state = s, compute_dtype, bias is not None, state
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x2, weight = ctx.saved_tensors
        s, dt, st = ctx.settings, ctx.compute_dtype, ctx.state
        dy = grad_out.reshape(-1, grad_out.shape[-1]).to(dt)
        hp = s.qaf or (st is not None and st.qaf)  # QAF: backward and update in high precision
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            dyq = _q(dy, s.quantize_gradients and not hp, s.gradient_rounding, s, st)  # along N
            if s.quantize_weights and not hp:
                wq = quantized_weight(weight, dt, True, s, st)  # W^T blocked along N
            else:
                wq = weight.to(dt)
            grad_x = (dyq @ wq).reshape(ctx.x_shape).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            dyTq = _qT(dy, s.quantize_gradients and not hp, s.gradient_rounding, s, st)  # along M
            xTq = _qT(x2, s.quantize_activations and not hp, s.wgrad_activation_rounding, s, st)
            grad_w = (dyTq.t() @ xTq).to(weight.dtype)
            if s.measure_noise and st is not None and not hp:
                # the same wgrad GEMM on the high-precision operands: the reference of the rule
                st.accumulate((dy.t() @ x2).float(), grad_w.float())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = dy.sum(0).to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None, None


def compute_dtype_for(x: Tensor) -> torch.dtype:
    """The dtype the GEMMs run in: the autocast dtype when autocast is on for x's device."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


class FP4Linear(nn.Linear):
    """Drop-in nn.Linear with FP4 GEMMs: ``from_linear`` wraps a layer's Parameters in a new
    module, ``convert_in_place`` turns an nn.Linear object itself into one (what the plugin
    does, so hooks and FSDP's references to the module stay valid)."""

    settings: FP4Settings
    fp4_state: FP4LayerState

    @classmethod
    def from_linear(cls, linear: nn.Linear, settings: FP4Settings, layer: int = 0) -> FP4Linear:
        """Wrap ``linear``'s own Parameters (no copy, same names) in an FP4Linear."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.settings, new.fp4_state = settings, FP4LayerState(layer)
        new.train(linear.training)
        return new

    @classmethod
    def convert_in_place(cls, linear: nn.Linear, settings: FP4Settings, layer: int = 0) -> FP4Linear:
        linear.__class__ = cls
        linear.settings, linear.fp4_state = settings, FP4LayerState(layer)
        return linear  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        if not self.settings.enabled:
            return super().forward(x)
        dt = compute_dtype_for(x)
        with torch.autocast(x.device.type, enabled=False):
            return FP4LinearFunction.apply(x, self.weight, self.bias, self.settings, dt,
                                           getattr(self, "fp4_state", None))

    def extra_repr(self) -> str:
        s = self.settings
        qaf = s.qaf or getattr(self, "fp4_state", FP4LayerState()).qaf
        return f"{super().extra_repr()}, fmt={s.fmt}, qaf={qaf}"
