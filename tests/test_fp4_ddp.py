"""FP4Precision under DDP on CPU (gloo, 2 spawned processes): every rank gets the same batch, so
the local high-precision gradients agree exactly while the FP4 ones differ only by rounding
noise. Ranks must draw independent noise, stay in sync, and the monitor must measure the
rank-averaged gradient the optimizer uses (noise shrinks ~1/sqrt(2))."""

import pickle

import lightning as L
import torch
from torch import nn

from callbacks.quantization_noise import QuantizationNoiseMonitor
from lit_reason.precision import FP4Precision


class SameBatchMLP(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(128, 32, generator=g), torch.randn(128, 16, generator=g)

    def training_step(self, batch, _):
        return nn.functional.mse_loss(self.net(self.x), self.y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(list(range(16)), batch_size=1)


class SaveLocal(L.Callback):
    """Before the monitor reduces them: this rank's own g_hp and g_fp4 of the last layer."""

    def __init__(self, path):
        self.path = path

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        st = pl_module.net[2].fp4_state  # the last layer: its dy comes from the loss, not FP4
        if trainer.global_step == 0:
            with open(f"{self.path}.local{trainer.global_rank}", "wb") as f:
                pickle.dump((st.hp_grad.clone(), st.fp4_grad.clone()), f)

    def on_train_end(self, trainer, pl_module):
        monitor = next(c for c in trainer.callbacks if isinstance(c, QuantizationNoiseMonitor))
        weights = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        with open(f"{self.path}.end{trainer.global_rank}", "wb") as f:
            pickle.dump((weights, monitor.history, trainer.precision_plugin.settings.step), f)


def test_ddp_two_gloo_ranks_independent_noise_synchronised_weights(tmp_path):
    path = str(tmp_path / "fp4")
    L.seed_everything(0)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        plugins=[FP4Precision(dtype="float32")],
                        callbacks=[SaveLocal(path), QuantizationNoiseMonitor(every_n_steps=1)])
    trainer.fit(SameBatchMLP())
    local, end = [], []
    for r in range(2):
        with open(f"{path}.local{r}", "rb") as f:
            local.append(pickle.load(f))
        with open(f"{path}.end{r}", "rb") as f:
            end.append(pickle.load(f))
    (hp0, fp0), (hp1, fp1) = local
    assert torch.equal(hp0, hp1)  # same batch, same weights: identical high-precision gradient
    assert not torch.equal(fp0, fp1)  # ... but each rank rounded with its own noise
    assert torch.equal(end[0][0], end[1][0])  # DDP kept the ranks in sync
    assert end[0][2] == end[1][2] == 3  # noise step advanced once per optimizer step
    # both ranks measured the same averaged gradient; its noise is below either rank's own
    h0, h1 = end[0][1][0], end[1][1][0]
    assert h0["per_layer"] == h1["per_layer"]
    avg_noise = h0["per_layer"]["net.2"][1]
    own = [(fp - hp).double().norm().item() for hp, fp in local]
    assert avg_noise < 0.9 * min(own)
