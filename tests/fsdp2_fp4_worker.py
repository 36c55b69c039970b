"""Worker for tests/test_fp4_fsdp.py: FP4FSDPPrecision under ModelParallelStrategy (FSDP2) on
2 CPU gloo ranks. Lightning re-executes this script for rank 1, so it must be a script.

    python tests/fsdp2_fp4_worker.py OUT.json MODE      # MODE: fsdp2 | single
"""

import json
import sys

import lightning as L
import torch
from torch import nn

from callbacks.quantization_noise import QuantizationNoiseMonitor
from lit_reason.precision import FP4FSDPPrecision, FP4Precision

DETERMINISTIC = {"dtype": "float32", "quantize_gradients": False, "wgrad_activation_rounding": "nearest"}


class SameBatchMLP(L.LightningModule):
    def __init__(self, shard: bool):
        super().__init__()
        torch.manual_seed(0)
        self.shard = shard
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(128, 32, generator=g), torch.randn(128, 16, generator=g)

    def configure_model(self):
        if self.shard:
            from torch.distributed.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]
            fully_shard(self.net[0], mesh=mesh)  # one linear sharded itself, one inside its parent
            fully_shard(self.net, mesh=mesh)

    def training_step(self, batch, _):
        return nn.functional.mse_loss(self.net(self.x), self.y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(list(range(16)), batch_size=1)


def full(p):
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().flatten().tolist()


def main(out: str, mode: str) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    shard = mode == "fsdp2"
    plugin = (FP4FSDPPrecision if shard else FP4Precision)(**DETERMINISTIC)
    monitor = QuantizationNoiseMonitor(every_n_steps=1)
    if shard:
        kwargs = {"devices": 2, "strategy": ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)}
    else:
        kwargs = {"devices": 1}
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, plugins=[plugin],
                        callbacks=[monitor], **kwargs)
    module = SameBatchMLP(shard)
    trainer.fit(module)
    weights = [v for p in module.parameters() for v in full(p)]
    if trainer.global_rank == 0:
        with open(out, "w") as f:
            json.dump({"classes": [type(m).__name__ for m in module.net], "weights": weights,
                       "ratios": [h["noise_ratio"] for h in monitor.history], "fp4_layers": plugin.fp4_layers}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
