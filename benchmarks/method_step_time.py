"""Step time of each method relative to GRPO on the same model, prompts and G (docs/real_model.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/method_step_time.py [--rounds 3] [--steps 3] [--threads 1]
    .venv/bin/python benchmarks/method_step_time.py --model tiny --rounds 1 --steps 1     # smoke check, seconds

Each method trains ``--warmup + --steps`` steps in its own subprocess (a fresh process each, so
no method inherits another's caches or allocator state); the methods run in a rotated order per
round, so a change in background load hits every method alike, and each round's ratios are taken
against that round's GRPO. Printed per method: median seconds per step, completion tokens per step,
and the ratio to GRPO (the median over rounds, with the range) both per step and per completion
token (methods sample different lengths). The other processes' CPU use during each round is shown:
compare only rounds where it is near 0.

The methods run as the real-model experiments configure them (easy synthetic math, chat prompts,
2 prompts x G 8, 24 new tokens, temperature 1.0, lr 1e-5): GRPO with beta 0 (no reference pass),
GRPO with beta 0.005 (to separate the KL reference pass from each method's own cost), Intuitor
(self-certainty, beta 0.005), NTHR (beta_nthr 1, eta adaptive) and HRPO (beta 0.005, temperature 0.5).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

REWARDS = {"correct": 1.0, "format": 0.5}
#: name -> (module class name, constructor arguments beyond the shared ones)
METHODS = {
    "GRPO": ("GRPO", {"rewards": REWARDS}),
    "GRPO beta 0.005": ("GRPO", {"rewards": REWARDS, "beta": 0.005}),
    "Intuitor": ("Intuitor", {"rewards": {"self_certainty": 1.0, "correct": 0.0}, "beta": 0.005}),
    "NTHR": ("NTHR", {"rewards": REWARDS, "beta_nthr": 1.0, "eta": "adaptive"}),
    "HRPO": ("HRPO", {"rewards": REWARDS, "beta": 0.005, "temperature": 0.5, "delimiter": "<answer>"}),
}


def worker(method: str, args: argparse.Namespace) -> dict:
    """Train one method; per-step wall seconds and completion tokens (after the warm-up steps)."""
    import lightning as L
    import torch

    from datamodules import MathDataModule
    from lit_reason import modules

    torch.set_num_threads(args.threads)
    class_name, extra = METHODS[method]
    shared = dict(model=args.model, prompt_format="chat", num_generations=args.G, max_new_tokens=args.new_tokens,
                  temperature=1.0, lr=1e-5, sampling_seed=0)
    module = getattr(modules, class_name)(**{**shared, **extra})
    rows: list[tuple[float, float]] = []

    class Steps(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            tokens = float(outputs["rollout"].completion_mask.sum()) if isinstance(outputs, dict) else float("nan")
            rows.append((time.perf_counter() - self.start, tokens))

    data = MathDataModule(source="synthetic", difficulty="easy", prompt_format="chat", system_prompt="default",
                          num_train=10_000, num_val=0, batch_size=args.prompts, seed=0)
    L.seed_everything(0)
    trainer = L.Trainer(max_steps=args.warmup + args.steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Steps()])
    trainer.fit(module, datamodule=data)
    measured = rows[args.warmup:]
    return {"seconds": [s for s, _ in measured], "tokens": [t for _, t in measured]}


def run_round(order: list[str], args: argparse.Namespace) -> tuple[dict[str, dict], float | None]:
    from step_time import LoadMeter

    meter, out = LoadMeter(include_children=True), {}
    for method in order:
        with tempfile.NamedTemporaryFile(suffix=".json") as result:
            cmd = [sys.executable, __file__, "--worker", method, "--json", result.name, "--model", args.model,
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--prompts", str(args.prompts), "--G", str(args.G), "--new-tokens", str(args.new_tokens)]
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out[method] = json.loads(Path(result.name).read_text())
        print(f"  {method}: {statistics.median(out[method]['seconds']):.2f} s/step", flush=True)
    return out, meter.take()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per method and round")
    parser.add_argument("--warmup", type=int, default=1, help="steps run first and left out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--G", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--worker", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.json).write_text(json.dumps(worker(args.worker, args)))
        return
    if "GRPO" not in args.methods:
        parser.error("--methods must include GRPO (the reference of every ratio)")

    per_step: dict[str, list[float]] = {m: [] for m in args.methods}
    per_token: dict[str, list[float]] = {m: [] for m in args.methods}
    medians: dict[str, list[tuple[float, float]]] = {m: [] for m in args.methods}
    start = time.perf_counter()
    for r in range(args.rounds):
        order = args.methods[r % len(args.methods):] + args.methods[:r % len(args.methods)]
        print(f"round {r + 1}/{args.rounds}: {', '.join(order)}", flush=True)
        results, load = run_round(order, args)
        ref_s = statistics.median(results["GRPO"]["seconds"])
        ref_t = ref_s / statistics.median(results["GRPO"]["tokens"])
        for m in args.methods:
            s, t = statistics.median(results[m]["seconds"]), statistics.median(results[m]["tokens"])
            medians[m].append((s, t))
            per_step[m].append(s / ref_s)
            per_token[m].append(s / t / ref_t)
        print(f"  other processes' CPU during the round: {load:.2f} cores" if load is not None else "", flush=True)

    print(f"\n{args.model}, {args.prompts} prompts x G {args.G}, {args.new_tokens} new tokens, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.steps} steps, {time.strftime('%Y-%m-%d')}, {time.perf_counter() - start:.0f} s")
    print("| method | s / step | completion tokens / step | step time / GRPO | time per token / GRPO |")
    print("|---|---|---|---|---|")
    for m in args.methods:
        s = statistics.median(x for x, _ in medians[m])
        t = statistics.median(y for _, y in medians[m])
        ratio = lambda xs: f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"  # noqa: E731
        print(f"| {m} | {s:.2f} | {t:.0f} | {ratio(per_step[m])} | {ratio(per_token[m])} |")


if __name__ == "__main__":
    main()
