"""The sqrt(3) rule of FP4 training, measured as the paper does, with the automatic switch to QAF.

FP4-all-the-way (arXiv 2505.19115): quantized training stops helping once the gradient norm
falls below about sqrt(3) times the noise that FP4 adds to the gradient estimate. That noise is
``g_fp4 - g_hp``: the weight gradient the FP4 backward produced minus the same backward in high
precision. (Not ``||Q(g) - g||`` of the finished gradient, which training never quantizes and
which, with block scaling, is a constant of the value distribution that never falls.)

Every ``every_n_steps`` optimizer steps the monitor turns on ``settings.measure_noise`` of the
FP4Precision plugin for one step: each FP4Linear then runs one extra GEMM in its backward,
``dy^T x`` on the unquantized operands, and accumulates it beside its FP4 wgrad (over all
backwards of the step, so gradient accumulation and several losses are covered). Right before
the optimizer step, per layer (after averaging both over ranks when ``reduce_across_ranks``,
so under DDP/FSDP it measures the gradient the optimizer really uses):

    ratio(layer) = ||g_hp|| / ||g_fp4 - g_hp||,   total = sqrt(sum ||g_hp||^2) / sqrt(sum ||noise||^2)

Logged: fp4/grad_norm, fp4/quant_noise, fp4/noise_ratio, fp4/qaf (fraction of layers in QAF),
plus per layer with ``log_per_layer``. With ``switch_to_qaf``, once the ratio stays below
``threshold`` for ``patience`` consecutive measurements the plugin switches to
quantization-aware fine-tuning (QAF: FP4 forward, high-precision backward and update):
``policy="global"`` switches every layer on the total ratio, ``"per_layer"`` switches each layer
on its own ratio. The decision is taken on rank 0 and broadcast. No randomness is drawn here.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_reason.precision import FP4Precision

POLICIES = ("global", "per_layer")


def noise_ratio(g_hp: torch.Tensor, g_fp4: torch.Tensor) -> tuple[float, float]:
    """(||g_hp||, ||g_fp4 - g_hp||) in float64 arithmetic."""
    g_hp, g_fp4 = g_hp.double(), g_fp4.double()
    return g_hp.norm().item(), (g_fp4 - g_hp).norm().item()


def ratio_of(grad_norm: float, noise: float) -> float:
    return grad_norm / noise if noise > 0 else math.inf


class QuantizationNoiseMonitor(L.Callback):
    """Measures ||g_hp|| / ||g_fp4 - g_hp|| per FP4 layer and applies the sqrt(3) rule.

    Args:
        every_n_steps: measure every n-th optimizer step (the first step is measured).
        threshold: the ratio below which FP4 training stalls (sqrt(3)).
        switch_to_qaf: switch to QAF after ``patience`` consecutive measurements below threshold.
        policy: "global" (total ratio, all layers switch together) or "per_layer".
        log_per_layer: also log fp4/noise_ratio/<layer>.
        reduce_across_ranks: average both gradients over ranks before measuring (one all-reduce
            of two weight-sized tensors per layer, on measured steps only).
    """

    def __init__(self, every_n_steps: int = 1, threshold: float = math.sqrt(3), switch_to_qaf: bool = False,
                 patience: int = 3, policy: str = "global", log_per_layer: bool = False,
                 reduce_across_ranks: bool = True) -> None:
        if every_n_steps < 1 or patience < 1:
            raise ValueError("QuantizationNoiseMonitor: every_n_steps and patience must be >= 1")
        if policy not in POLICIES:
            raise ValueError(f"QuantizationNoiseMonitor policy={policy!r}: use one of {POLICIES}")
        if not threshold > 0:
            raise ValueError(f"QuantizationNoiseMonitor threshold must be > 0 (got {threshold}); sqrt(3) is the rule")
        self.every_n_steps, self.threshold, self.switch_to_qaf = every_n_steps, threshold, switch_to_qaf
        self.patience, self.policy, self.log_per_layer = patience, policy, log_per_layer
        self.reduce_across_ranks = reduce_across_ranks
        self.history: list[dict[str, Any]] = []
        self.switched_at_step: int | None = None
        self.switched_layers: dict[str, int] = {}  # layer -> step it switched at
        self._calls = 0
        self._below = 0
        self._below_layer: dict[str, int] = {}
        self._warned = False

    def plugin(self, trainer: L.Trainer) -> FP4Precision | None:
        p = trainer.precision_plugin
        if isinstance(p, FP4Precision):
            return p
        if not self._warned:
            rank_zero_warn("QuantizationNoiseMonitor needs trainer.plugins: [lit_reason.precision.FP4Precision]; "
                           "without FP4 layers there is no FP4 noise to measure")
            self._warned = True
        return None

    def _arm(self, plugin: FP4Precision) -> None:
        """Measure the coming optimizer step when it is every n-th and some layer is not in QAF."""
        for _, layer in plugin.fp4_modules():
            layer.fp4_state.take_gradients()
        all_qaf = len(plugin.qaf_layers()) == len(plugin.fp4_layers)
        plugin.settings.measure_noise = self._calls % self.every_n_steps == 0 and not all_qaf

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        plugin = self.plugin(trainer)
        if plugin is not None:
            self._arm(plugin)

    def measure(self, trainer: L.Trainer, plugin: FP4Precision) -> dict[str, Any]:
        """Per-layer (||g_hp||, ||g_fp4 - g_hp||) from the gradients the layers recorded."""
        per_layer = {}
        reduce = self.reduce_across_ranks and trainer.world_size > 1
        for name, layer in plugin.fp4_modules():
            g_hp, g_fp4 = layer.fp4_state.take_gradients()
            if g_hp is None:
                continue
            if reduce:
                g_hp = trainer.strategy.reduce(g_hp, reduce_op="mean")
                g_fp4 = trainer.strategy.reduce(g_fp4, reduce_op="mean")
            per_layer[name] = noise_ratio(g_hp, g_fp4)
        grad_norm = math.sqrt(sum(g * g for g, _ in per_layer.values()))
        noise = math.sqrt(sum(q * q for _, q in per_layer.values()))
        return {"grad_norm": grad_norm, "quant_noise": noise, "noise_ratio": ratio_of(grad_norm, noise),
                "per_layer": per_layer}

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        plugin = self.plugin(trainer)
        if plugin is None:
            return
        measured = plugin.settings.measure_noise
        self._calls += 1
        if measured:
            stats = self.measure(trainer, plugin)
            if stats["per_layer"]:
                self._apply_rule(trainer, plugin, stats)
                n_qaf = len(plugin.qaf_layers())
                stats.update(step=trainer.global_step, qaf=n_qaf / max(len(plugin.fp4_layers), 1))
                self.history.append(stats)
                logs = {f"fp4/{k}": float(stats[k]) for k in ("grad_norm", "quant_noise", "noise_ratio", "qaf")}
                if self.log_per_layer:
                    for name, (g, q) in stats["per_layer"].items():
                        logs[f"fp4/noise_ratio/{name}"] = ratio_of(g, q)
                pl_module.log_dict(logs, on_step=True, on_epoch=False)
        self._arm(plugin)

    def _apply_rule(self, trainer: L.Trainer, plugin: FP4Precision, stats: dict[str, Any]) -> None:
        if not self.switch_to_qaf:
            return
        step = trainer.global_step
        if self.policy == "global":
            self._below = self._below + 1 if stats["noise_ratio"] < self.threshold else 0
            switch = [name for name, _ in plugin.fp4_modules()] if self._below >= self.patience else []
        else:
            switch = []
            for name, (g, q) in stats["per_layer"].items():
                below = ratio_of(g, q) < self.threshold
                self._below_layer[name] = self._below_layer.get(name, 0) + 1 if below else 0
                if self._below_layer[name] >= self.patience:
                    switch.append(name)
        switch = trainer.strategy.broadcast(switch, src=0)
        if not switch:
            return
        if self.policy == "global":
            plugin.set_qaf(True)
            self.switched_at_step = step
        else:
            plugin.set_qaf(True, switch)
            if self.switched_at_step is None:
                self.switched_at_step = step
        self.switched_layers.update({name: step for name in switch})
        what = "all layers" if self.policy == "global" else f"{len(switch)} layer(s) {switch[:4]}"
        rank_zero_info(
            f"QuantizationNoiseMonitor: ||g_hp|| / ||g_fp4 - g_hp|| < {self.threshold:.3f} for {self.patience} "
            f"measurements; switching {what} to QAF (FP4 forward, high-precision backward) at step {step}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self._calls, "below": self._below, "below_layer": dict(self._below_layer),
                "switched_at_step": self.switched_at_step, "switched_layers": dict(self.switched_layers)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._calls = state_dict.get("calls", 0)
        self._below = state_dict.get("below", 0)
        self._below_layer = dict(state_dict.get("below_layer", {}))
        self.switched_at_step = state_dict.get("switched_at_step")
        self.switched_layers = dict(state_dict.get("switched_layers", {}))
