"""Memory of a LoRA GRPO step against full fine-tuning, measured, on a ~100M-parameter model.

    .venv/bin/python benchmarks/lora_memory.py                      # full, lora_r16, lora_r64
    .venv/bin/python benchmarks/lora_memory.py --configs full lora_r16 --steps 2 --json out.json

Each configuration runs in its own subprocess (clean peaks): GRPO on the ``llama-100m`` preset
(110M parameters, float32) with a KL reference (beta 0.04), ``--steps`` steps on the toy task
(2 prompts x G=4). Reported, all measured in that process:

  * module MB: bytes of every parameter and buffer the module holds (policy, adapters, and the
    reference copy of full fine-tuning; a LoRA run has none: its reference is the base, adapters off);
  * grad MB / optimizer MB: bytes of the ``.grad`` tensors and of the AdamW state after training;
  * peak MB: CUDA max allocated, or on CPU the peak RSS (ru_maxrss) minus the RSS before the model
    was built (imports excluded), so the ratio compares what training itself holds;
  * step s: mean over the steps after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIGS = {
    "full": {},
    "lora_r16": {"lora": {"r": 16, "alpha": 32}},
    "lora_r64": {"lora": {"r": 64, "alpha": 128}},
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def worker(name: str, steps: int, model: str, max_new_tokens: int) -> dict:
    import lightning as L
    import torch

    from datamodules.toy import ToyDataModule
    from lit_reason.modules import GRPO

    import peft  # noqa: F401  (imported in every configuration, so the baseline RSS includes it)

    cuda = torch.cuda.is_available()
    L.seed_everything(0)
    before_mb = rss_mb()
    module = GRPO(model=model, num_generations=4, max_new_tokens=max_new_tokens, beta=0.04, lr=1e-4,
                  logprob_chunk_size=64, **CONFIGS[name])
    times: list[float] = []

    class Timer(L.Callback):
        def on_train_batch_start(self, *args):
            if cuda:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_train_batch_end(self, *args):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = L.Trainer(accelerator="auto", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[Timer()])
    trainer.fit(module, datamodule=ToyDataModule(batch_size=2, val_size=0))
    optimizer = trainer.optimizers[0]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    timed = times[1:] or times
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_mb)
    return {
        "config": name, "device": "cuda" if cuda else "cpu",
        "trainable_m": round(sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6, 2),
        "module_mb": round(tensor_mb([*module.parameters(), *module.buffers()])),
        "grad_mb": round(tensor_mb([p.grad for p in module.parameters() if p.grad is not None]), 1),
        "optimizer_mb": round(tensor_mb(state), 1),
        "peak_mb": round(peak),
        "step_s": round(sum(timed) / len(timed), 2),
    }


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["config"] == "full" and "error" not in r), None)
    lines = ["| config | trainable M | module MB | grad MB | optimizer MB | peak MB | peak vs full | step s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error'][:80]} | | | | | | |")
            continue
        ratio = f"{r['peak_mb'] / base['peak_mb']:.2f}x" if base else ""
        lines.append(f"| {r['config']} | {r['trainable_m']} | {r['module_mb']} | {r['grad_mb']} | {r['optimizer_mb']} | "
                     f"{r['peak_mb']} | {ratio} | {r['step_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--model", default="llama-100m")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.steps, args.model, args.max_new_tokens)))
        return
    rows = []
    for name in args.configs:
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--model", args.model,
               "--max_new_tokens", str(args.max_new_tokens)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        row = json.loads(found[-1][7:]) if found else {"config": name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
