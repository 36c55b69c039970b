"""The sqrt(3) rule as the paper measures it: ||g_hp|| / ||g_fp4 - g_hp|| inside the FP4 backward.

Brute force: the ratio against g_hp = dy^T x recomputed in float64 from hooks and g_fp4 from a
replayed run; the switch: a run whose per-token gradients cancel more and more switches to QAF at
the step the rule gives for the measured ratios, a run whose gradient does not shrink never does.
"""

import itertools
import math

import lightning as L
import pytest
import torch
from torch import nn

from callbacks.quantization_noise import QuantizationNoiseMonitor
from lit_reason.precision import FP4Precision

T, WIDTH = 256, 32


def fit(module, steps, plugin, monitor):
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, plugins=[plugin], callbacks=[monitor])
    trainer.fit(module)
    return trainer


class MLP(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16))
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 32, generator=g), torch.randn(64, 16, generator=g)

    def training_step(self, batch, _):
        return nn.functional.mse_loss(self.net(self.x), self.y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(list(range(64)), batch_size=1)


def test_ratio_matches_brute_force_on_a_small_mlp():
    monitor = QuantizationNoiseMonitor(every_n_steps=1, log_per_layer=True)
    fit(MLP(), 1, FP4Precision(dtype="float32", seed=3), monitor)
    stats = monitor.history[0]
    assert set(stats["per_layer"]) == {"net.0", "net.2"}
    # replay the same step (same seed, rank, step, layers -> same rounding noise) with hooks
    module, plugin = MLP(), FP4Precision(dtype="float32", seed=3)
    plugin.convert_module(module)
    saved = {}
    for name in ("net.0", "net.2"):
        layer = module.get_submodule(name)
        layer.register_forward_hook(lambda m, i, o, n=name: saved.__setitem__((n, "x"), i[0].detach()))
        layer.register_full_backward_hook(lambda m, gi, go, n=name: saved.__setitem__((n, "dy"), go[0].detach()))
    module.training_step(None, 0).backward()
    hp2 = noise2 = 0.0
    for name, (grad_norm, noise) in stats["per_layer"].items():
        g_hp = saved[(name, "dy")].double().t() @ saved[(name, "x")].double()  # exact wgrad
        g_fp4 = module.get_submodule(name).weight.grad.double()
        assert grad_norm == pytest.approx(g_hp.norm().item(), rel=1e-5)
        assert noise == pytest.approx((g_fp4 - g_hp).norm().item(), rel=1e-4)
        assert 0.05 < noise / grad_norm < 1.0  # FP4 noise is really there, and smaller than g
        hp2, noise2 = hp2 + grad_norm**2, noise2 + noise**2
    assert stats["noise_ratio"] == pytest.approx(math.sqrt(hp2 / noise2), rel=1e-6)


class Cancelling(L.LightningModule):
    """loss = sum_t c_t <W x, u> per layer with c_t = a(step) + s_t, balanced signs s_t = +-1:
    per-token gradients c_t u x^T stay O(1) while their sum T * a(step) u x^T shrinks with a."""

    def __init__(self, schedules):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.Linear(WIDTH, WIDTH, bias=False) for _ in schedules)
        self.schedules = schedules
        g = torch.Generator().manual_seed(1)
        self.x, self.u = torch.randn(WIDTH, generator=g), torch.randn(WIDTH, generator=g)
        self.signs = torch.where(torch.randperm(T, generator=g) < T // 2, 1.0, -1.0)

    def training_step(self, batch, _):
        xs = self.x.expand(T, WIDTH)
        loss = 0.0
        for layer, a in zip(self.layers, self.schedules):
            loss = loss + ((layer(xs) @ self.u) * (a(self.global_step) + self.signs)).sum()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(list(range(64)), batch_size=1)


def first_switch(ratios, steps, threshold, patience):
    below = 0
    for r, step in zip(ratios, steps):
        below = below + 1 if r < threshold else 0
        if below >= patience:
            return step
    return None


def test_shrinking_gradient_switches_at_the_step_the_rule_says_and_steady_one_never_does():
    shrinking = Cancelling([lambda step: 0.5**step])
    plugin = FP4Precision(dtype="float32", seed=0)
    monitor = QuantizationNoiseMonitor(every_n_steps=2, switch_to_qaf=True, patience=2)
    fit(shrinking, 16, plugin, monitor)
    ratios = [h["noise_ratio"] for h in monitor.history]
    steps = [h["step"] for h in monitor.history]
    assert steps[:3] == [0, 2, 4]  # every 2nd optimizer step is measured
    assert ratios[0] > 20 * math.sqrt(3)  # far above the rule early on ...
    assert all(later < earlier for earlier, later in itertools.pairwise(ratios))  # ... and falling
    expected = first_switch(ratios, steps, math.sqrt(3), 2)
    assert expected is not None and 4 <= expected <= 14
    assert plugin.qaf and monitor.switched_at_step == expected
    assert steps[-1] == expected  # once every layer is in QAF nothing is measured any more
    # after the switch the backward is high precision: the gradient is exactly dy^T x
    layer = shrinking.layers[0]
    layer.weight.grad = None
    shrinking.training_step(None, 0).backward()
    c = 0.5**shrinking.global_step + shrinking.signs
    exact = torch.outer(shrinking.u, shrinking.x) * c.sum()
    torch.testing.assert_close(layer.weight.grad, exact, rtol=1e-4, atol=1e-4)

    steady = Cancelling([lambda step: 1.0])
    plugin = FP4Precision(dtype="float32", seed=0)
    monitor = QuantizationNoiseMonitor(every_n_steps=1, switch_to_qaf=True, patience=1)
    fit(steady, 12, plugin, monitor)
    assert len(monitor.history) == 12 and monitor.switched_at_step is None and not plugin.qaf
    assert min(h["noise_ratio"] for h in monitor.history) > 10 * math.sqrt(3)


def test_per_layer_policy_switches_only_the_layer_whose_gradient_cancels():
    module = Cancelling([lambda step: 1.0 if step < 3 else 0.0, lambda step: 1.0])
    plugin = FP4Precision(dtype="float32", seed=0)
    monitor = QuantizationNoiseMonitor(every_n_steps=1, switch_to_qaf=True, patience=2, policy="per_layer",
                                       log_per_layer=True)
    fit(module, 8, plugin, monitor)
    # layers.0: g_hp cancels (to float32 round-off) at steps 3 and 4 -> switches at step 4
    assert monitor.switched_layers == {"layers.0": 4}
    assert plugin.qaf_layers() == ["layers.0"] and not plugin.qaf
    ratios = [h["per_layer"]["layers.0"][0] / h["per_layer"]["layers.0"][1] for h in monitor.history[:5]]
    assert [r < math.sqrt(3) for r in ratios] == [False] * 3 + [True] * 2
    assert min(ratios[:3]) > 20 and max(ratios[3:]) < 1e-3
    assert set(monitor.history[-1]["per_layer"]) == {"layers.1"}  # the QAF layer is no longer measured


def test_monitor_rejects_bad_arguments_and_warns_without_plugin():
    with pytest.raises(ValueError, match="policy"):
        QuantizationNoiseMonitor(policy="vote")
    with pytest.raises(ValueError, match="threshold"):
        QuantizationNoiseMonitor(threshold=0)
    monitor = QuantizationNoiseMonitor()
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    with pytest.warns(UserWarning, match="FP4Precision"):
        trainer.fit(MLP())
    assert monitor.history == []
