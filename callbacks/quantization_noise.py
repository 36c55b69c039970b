"""Quantization-noise monitor for FP4 training, with the sqrt(3) rule's automatic switch to QAF.

FP4-all-the-way (arXiv 2505.19115) observes that quantized training stops making progress when
the gradient norm falls below about sqrt(3) times the gradient's quantization noise. Here, for
each FP4Linear (or every nn.Linear when no FP4 plugin is active), right before the optimizer
step (after backward and any gradient accumulation / all-reduce, for automatic and manual
optimization alike):

    grad_norm(layer) = ||g||,   noise(layer) = ||Q(g) - g||

with g the layer's weight gradient and Q the plugin's format, blocked along g's last dim, using
``rounding`` ("stochastic" by default, the rounding the backward pass applies to gradients;
"nearest" gives the deterministic error). Totals are the root of the sum of squares; the
ratio is grad_norm / noise. Logged every ``every_n_steps`` optimizer steps:

    fp4/grad_norm, fp4/quant_noise, fp4/noise_ratio, fp4/qaf  (+ per layer with log_per_layer)

With ``switch_to_qaf=True``, once the total ratio stays below ``threshold`` (sqrt(3)) for
``patience`` consecutive measurements, the FP4Precision plugin (trainer.precision_plugin) is
switched to quantization-aware fine-tuning (FP4 forward, high-precision backward and update)
and the switch is announced. The decision is taken on rank 0 and broadcast. Gradients are
measured per rank (replicated under DDP; sharded strategies see their shard only).
The noise draws use the callback's own generator, so monitoring never perturbs training's RNG.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lit_reason.precision import FP4Linear, FP4Precision, quantize
from lit_reason.precision.formats import check_args


def layer_noise(grad: torch.Tensor, fmt: str, rounding: str, generator: torch.Generator | None,
                mx_scale: str = "ocp") -> tuple[float, float]:
    """(||g||, ||Q(g) - g||) in float32 for one gradient tensor."""
    g = grad.detach().float()
    return g.norm().item(), (quantize(g, fmt, rounding, generator, mx_scale) - g).norm().item()


class QuantizationNoiseMonitor(L.Callback):
    """Logs gradient norm vs FP4 quantization noise per layer and in total; optional QAF switch.

    Args:
        every_n_steps: measure every n-th optimizer step.
        rounding: quantizer used for the noise ("stochastic" or "nearest").
        fmt / mx_scale: format when no FP4Precision is active (otherwise the plugin's).
        threshold: the ratio grad_norm / noise below which FP4 training stalls (sqrt(3)).
        switch_to_qaf: flip the plugin into QAF after ``patience`` measurements below threshold.
        log_per_layer: also log fp4/noise/<layer> and fp4/grad_norm/<layer>.
        seed: seed of the monitor's private generator for stochastic noise draws.
    """

    def __init__(self, every_n_steps: int = 1, rounding: str = "stochastic", fmt: str = "nvfp4",
                 mx_scale: str = "ocp", threshold: float = math.sqrt(3), switch_to_qaf: bool = False,
                 patience: int = 3, log_per_layer: bool = False, seed: int = 0) -> None:
        if every_n_steps < 1 or patience < 1:
            raise ValueError("QuantizationNoiseMonitor: every_n_steps and patience must be >= 1")
        check_args(fmt, rounding, mx_scale)
        self.every_n_steps, self.rounding, self.fmt, self.mx_scale = every_n_steps, rounding, fmt, mx_scale
        self.threshold, self.switch_to_qaf, self.patience = threshold, switch_to_qaf, patience
        self.log_per_layer, self.seed = log_per_layer, seed
        self.history: list[dict[str, Any]] = []
        self.switched_at_step: int | None = None
        self._calls = 0
        self._below = 0
        self._generators: dict[torch.device, torch.Generator] = {}
        self._warned = False

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    @staticmethod
    def plugin(trainer: L.Trainer) -> FP4Precision | None:
        p = trainer.precision_plugin
        return p if isinstance(p, FP4Precision) else None

    def measure(self, module: nn.Module, fmt: str, mx_scale: str) -> dict[str, Any]:
        """Per-layer and total gradient norm and noise of the FP4 (else all Linear) layers."""
        layers = [(n, m) for n, m in module.named_modules() if isinstance(m, FP4Linear)]
        if not layers:
            layers = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
        per_layer = {}
        for name, m in layers:
            if m.weight.grad is not None:
                gen = self._generator(m.weight.grad.device) if self.rounding == "stochastic" else None
                per_layer[name] = layer_noise(m.weight.grad, fmt, self.rounding, gen, mx_scale)
        grad_norm = math.sqrt(sum(g * g for g, _ in per_layer.values()))
        noise = math.sqrt(sum(q * q for _, q in per_layer.values()))
        ratio = grad_norm / noise if noise > 0 else math.inf
        return {"grad_norm": grad_norm, "quant_noise": noise, "noise_ratio": ratio, "per_layer": per_layer}

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self._calls += 1
        if (self._calls - 1) % self.every_n_steps:
            return
        plugin = self.plugin(trainer)
        fmt, mx_scale = (plugin.settings.fmt, plugin.settings.mx_scale) if plugin else (self.fmt, self.mx_scale)
        stats = self.measure(pl_module, fmt, mx_scale)
        if not stats["per_layer"]:
            return
        self._maybe_switch(trainer, plugin, stats["noise_ratio"])
        stats.update(step=trainer.global_step, qaf=bool(plugin and plugin.qaf))
        self.history.append(stats)
        logs = {f"fp4/{k}": float(stats[k]) for k in ("grad_norm", "quant_noise", "noise_ratio", "qaf")}
        if self.log_per_layer:
            for name, (g, q) in stats["per_layer"].items():
                logs[f"fp4/grad_norm/{name}"], logs[f"fp4/noise/{name}"] = g, q
        pl_module.log_dict(logs, on_step=True, on_epoch=False)

    def _maybe_switch(self, trainer: L.Trainer, plugin: FP4Precision | None, ratio: float) -> None:
        if not self.switch_to_qaf or (plugin is not None and plugin.qaf):
            return
        if plugin is None:
            if not self._warned:
                rank_zero_warn("QuantizationNoiseMonitor(switch_to_qaf=True) needs trainer.plugins: "
                               "[lit_reason.precision.FP4Precision]; no switch will happen")
                self._warned = True
            return
        self._below = self._below + 1 if ratio < self.threshold else 0
        switch = trainer.strategy.broadcast(self._below >= self.patience, src=0)
        if switch:
            plugin.set_qaf(True)
            self.switched_at_step = trainer.global_step
            rank_zero_info(
                f"QuantizationNoiseMonitor: gradient norm / quantization noise = {ratio:.3f} < "
                f"{self.threshold:.3f} for {self.patience} measurements; switching FP4 to QAF "
                f"(FP4 forward, high-precision backward) at step {trainer.global_step}"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self._calls, "below": self._below, "switched_at_step": self.switched_at_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._calls = state_dict.get("calls", 0)
        self._below = state_dict.get("below", 0)
        self.switched_at_step = state_dict.get("switched_at_step")
