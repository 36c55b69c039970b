"""LoRA weight pushes to the async sampler: merged (W + BA for every weight) against adapter-only
(the base once, then the LoRA A/B tensors), bytes and seconds per push, and what each costs the
sampler (its load: adapter-only merges W + BA there; and a generation, which should not change:
the sampler generates with merged weights either way).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/lora_sync.py                      # SmolLM2-135M, LoRA r 16
    PYTHONPATH=$PWD .venv/bin/python benchmarks/lora_sync.py --model tiny --r 4

Both modes run in this process one after the other against their own sampler process (1 thread
each), with the same policy; the first push (the start, base included) is reported apart from the
steady ones. Ratios are adapter / merged, measured here in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lit_reason.models.lora import LoraSettings, load_lora_policy
from lit_reason.rollout import SamplingConfig
from lit_reason.rollout_step.async_rollouts import sync_weights
from lit_reason.rollout_step.sampler_worker import GenerateRequest, SamplerWorker, WorkerSpec


def run(mode: str, args: argparse.Namespace, loaded, settings: LoraSettings) -> dict:
    policy = loaded.model
    spec = WorkerSpec(f"sampler-{mode}", args.model, "float32", SamplingConfig(max_new_tokens=args.max_new_tokens), 1,
                      lora=vars(settings) if mode == "adapter" else None)
    worker = SamplerWorker(spec, sync_weights(policy, mode, everything=True), timeout_s=600)
    try:
        first_s, first_bytes = worker.push(sync_weights(policy, mode, everything=True), 0)
        worker._wait_for(lambda: worker.loaded == 0, "the ack of weights v0")  # the sampler's start is not a push
        pushes = []
        for version in range(1, args.pushes + 1):
            with torch.no_grad():  # stands for an optimizer step: the adapters move
                for name, p in policy.named_parameters():
                    if p.requires_grad:
                        p.add_(1e-3 * torch.randn_like(p))
            load_before = worker.load_seconds
            seconds, written = worker.push(sync_weights(policy, mode), version)
            worker._wait_for(lambda v=version: worker.loaded == v, f"the ack of weights v{version}")
            pushes.append({"push_s": seconds, "bytes": written, "load_s": worker.load_seconds - load_before})
        ids = loaded.tokenizer(["What is 12 + 30? Answer:"] * args.rows, return_tensors="pt")
        runs = []
        for index in range(args.generations):  # the fastest of a few: the machine is shared
            worker.request(GenerateRequest(index, ids["input_ids"], ids["attention_mask"], seed=0,
                                           min_version=args.pushes))
            runs.append(worker.take(index))
        generated = min(runs, key=lambda g: g.finished - g.started)
        return {"mode": mode, "first_push_bytes": first_bytes, "first_push_s": first_s,
                "push_bytes": statistics.mean(p["bytes"] for p in pushes),
                "push_s": statistics.mean(p["push_s"] for p in pushes),
                "sampler_load_s": statistics.mean(p["load_s"] for p in pushes),
                "generate_s": generated.finished - generated.started,
                "tokens": int(generated.rollout.completion_mask.sum())}
    finally:
        worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--pushes", type=int, default=3)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--order", nargs=2, default=["merged", "adapter"], choices=["merged", "adapter"],
                        help="which mode runs first (run both orders: the machine's load moves)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    settings = LoraSettings(r=args.r)
    loaded = load_lora_policy(args.model, "float32", False, settings)
    results = [run(mode, args, loaded, settings) for mode in args.order]
    merged, adapter = (next(r for r in results if r["mode"] == mode) for mode in ("merged", "adapter"))
    for r in results:
        print(f"{r['mode']:8s} first push {r['first_push_bytes'] / 2**20:8.1f} MB {r['first_push_s']:.3f} s | "
              f"push {r['push_bytes'] / 2**20:8.2f} MB {r['push_s']:.3f} s, sampler load {r['sampler_load_s']:.3f} s | "
              f"generate {r['generate_s']:.2f} s ({r['tokens']} tokens)")
    print(f"adapter / merged: bytes per push {adapter['push_bytes'] / merged['push_bytes']:.4f}, "
          f"push s {adapter['push_s'] / merged['push_s']:.3f}, sampler load s "
          f"{adapter['sampler_load_s'] / merged['sampler_load_s']:.3f}, generate s "
          f"{adapter['generate_s'] / merged['generate_s']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "at": time.strftime("%Y-%m-%d %H:%M")}, f, indent=1)


if __name__ == "__main__":
    main()
