"""What the checkpoint checksums cost (lit_reason.utils.checkpoint_io), on the built-in pretrained model.

    .venv/bin/python benchmarks/checkpoint_checksum.py [--model smollm2-135m-instruct]

A full-training checkpoint's tensors: the policy's fp32 state dict plus AdamW's two moments per
trained weight (a checkpoint holds both). Prints the seconds to checksum them (CRC-32 of every
tensor's bytes: what a save and a load each add) against the seconds ``torch.save`` and
``torch.load`` take for the same checkpoint into the system temp directory, in the same process,
and the ratios (best of 3 each).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from lit_reason.models.policy import load_policy
from lit_reason.utils.checkpoint_io import tensor_checksums


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    model = load_policy(args.model).model.float()
    weights = {n: t.detach() for n, t in model.state_dict().items()}
    moments = {i: {"step": torch.tensor(10.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
               for i, p in enumerate(model.parameters())}
    checkpoint = {"state_dict": weights, "optimizer_states": [{"state": moments}]}
    size = sum(t.numel() * t.element_size() for t in weights.values())
    total = size + sum(2 * p.numel() * p.element_size() for p in model.parameters())
    with tempfile.TemporaryDirectory() as out:
        path = os.path.join(out, "c.ckpt")
        save = best_of(3, lambda: torch.save(checkpoint, path))
        load = best_of(3, lambda: torch.load(path, weights_only=False))
    weights_only = best_of(3, lambda: tensor_checksums({"state_dict": weights}))
    everything = best_of(3, lambda: tensor_checksums(checkpoint))
    print(f"{args.model}: weights {size / 2**20:.0f} MiB, checkpoint tensors {total / 2**20:.0f} MiB")
    print(f"torch.save {save:.2f} s, torch.load {load:.2f} s")
    print(f"checksums of the weights: {weights_only:.2f} s ({size / 2**20 / weights_only:.0f} MiB/s)")
    print(f"checksums of every tensor: {everything:.2f} s = {everything / save:.2f} x torch.save, "
          f"{everything / load:.2f} x torch.load")


if __name__ == "__main__":
    main()
