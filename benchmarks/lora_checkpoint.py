"""Size of a LoRA checkpoint with and without its frozen base, on the built-in pretrained model.

    .venv/bin/python benchmarks/lora_checkpoint.py [--model smollm2-135m-instruct] [--r 16]

One GRPO step (1 prompt x G 2, 8 new tokens) with LoRA on every linear layer, then
``trainer.save_checkpoint`` twice: the default (the base left out, lit_reason.models.lora_checkpoint) and
``lora.save_base: true``. Prints both file sizes, their ratio, and the seconds to save and to load
each back into a fresh module (the slim load re-reads nothing: the fresh module already holds the
base; it only checks the fingerprint).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import lightning as L
import torch

from datamodules import MathDataModule
from lit_reason.modules import GRPO


def build(model: str, r: int, save_base: bool) -> GRPO:
    torch.manual_seed(0)
    return GRPO(model=model, num_generations=2, max_new_tokens=8, lr=1e-5, prompt_format="chat",
                lora={"r": r, "save_base": save_base})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--r", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        rows = {}
        for name, save_base in (("adapters only (default)", False), ("with the base (save_base)", True)):
            module = build(args.model, args.r, save_base)
            trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                                num_sanity_val_steps=0, default_root_dir=out)
            trainer.fit(module, datamodule=MathDataModule(source="synthetic", difficulty="easy", batch_size=1))
            path = os.path.join(out, f"{save_base}.ckpt")
            start = time.perf_counter()
            trainer.save_checkpoint(path)
            save_s = time.perf_counter() - start
            fresh = build(args.model, args.r, save_base)
            start = time.perf_counter()
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            fresh.on_load_checkpoint(checkpoint)
            fresh.load_state_dict(checkpoint["state_dict"])
            load_s = time.perf_counter() - start
            rows[name] = (os.path.getsize(path), save_s, load_s)
        base = rows["with the base (save_base)"][0]
        print(f"{args.model}, LoRA r {args.r} on every linear layer, float32, {time.strftime('%Y-%m-%d')}")
        print(f"{'checkpoint':<28} {'MB':>8} {'/ with base':>12} {'save s':>8} {'load s':>8}")
        for name, (size, save_s, load_s) in rows.items():
            print(f"{name:<28} {size / 2**20:>8.1f} {size / base:>12.3f} {save_s:>8.2f} {load_s:>8.2f}")


if __name__ == "__main__":
    main()
