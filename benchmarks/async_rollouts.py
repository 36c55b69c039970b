"""Asynchronous rollouts on a 2-core CPU: the synchronous step with 2 threads against the sampler
process on one core and the trainer on the other, and the reward curve at k = 0, 1, 2.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/async_rollouts.py --arms sync k1 --steps 6        # SmolLM2-135M, speed
    PYTHONPATH=$PWD .venv/bin/python benchmarks/async_rollouts.py --model tiny --task char_fill --letters a \
        --steps 30 --group 8 --batch 4 --max-new-tokens 12 --lr 1e-2 --arms sync1 k0 k1 k2 \
        --figure docs/figures/async_rollouts_reward.png                                       # reward curves

Arms (all in this process, one after the other, same seed, same data, same number of steps):
  * ``sync``: ``model.async_rollouts`` off, torch with 2 threads (generation, then training);
    ``sync1`` the same with 1 thread (on a busy machine 2 threads can be slower than 1: read both);
  * ``k0``, ``k1``, ``k2``: ``async_rollouts: {max_staleness: k}``, the trainer with 1 thread and the
    sampler process with 1 (``worker_threads: 1``); k = 0 is the synchronous schedule on split cores.

Reported: wall time of the whole fit (the sampler's start included) and of the steady state (from
the end of step 1 to the end of the last step), tokens generated per second of each, both as
ratios to ``sync``; per arm the mean of the async metrics (trainer idle, sampler idle, sync time,
ages). The load average of the machine is printed before and after each arm: on a shared machine
another process's work lands in one arm and not another, so read the ratios with it. The reward
per step of every arm goes to ``--figure`` (does staleness cost learning over these steps?).
Tasks: ``math`` (easy synthetic arithmetic, chat prompts, rewards correct + 0.5 format: the
SmolLM2 config) or ``char_fill`` (the toy task, partial credit: a curve that rises in tens of steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import lightning as L
import torch

from datamodules.math_data import MathDataModule
from datamodules.toy import ToyDataModule
from lit_reason.modules import GRPO


class StepLog(L.Callback):
    """Per step: wall clock at its end, tokens generated, reward, the async metrics."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("async/")}
        self.rows.append({"end": time.perf_counter(), "tokens": outputs["rollout"].num_tokens,
                          "reward": float(outputs["rewards"].nanmean()), **metrics})
        print(f"  step {len(self.rows)}: reward {self.rows[-1]['reward']:.3f} {metrics}", flush=True)


def run_arm(arm: str, args: argparse.Namespace) -> dict:
    k = None if arm.startswith("sync") else int(arm[1:])
    torch.set_num_threads(1 if k is not None or arm == "sync1" else 2)
    L.seed_everything(0)
    math = args.task == "math"
    module = GRPO(model=args.model, prompt_format="chat" if math else "plain", max_prompt_length=256,
                  num_generations=args.group, max_new_tokens=args.max_new_tokens, lr=args.lr,
                  rewards={"correct": 1.0, "format": 0.5} if math else None,
                  rollout_correction={"cap": 2.0} if k else None,
                  async_rollouts=None if k is None else {"max_staleness": k, "worker_threads": 1})
    if math:
        data = MathDataModule(source="synthetic", difficulty="easy", prompt_format="chat", system_prompt="default",
                              num_val=0, batch_size=args.batch, seed=0)
    else:
        data = ToyDataModule(task="char_fill", batch_size=args.batch, val_size=0, letters=args.letters)
    log = StepLog()
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[log])
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start
    rows = log.rows
    steady = rows[-1]["end"] - rows[0]["end"]
    out = {"arm": arm, "wall_s": wall, "steady_s": steady, "tokens": sum(r["tokens"] for r in rows),
           "steady_tokens": sum(r["tokens"] for r in rows[1:]), "rewards": [r["reward"] for r in rows],
           "load_before": load_before, "load_after": os.getloadavg()[0]}
    for key in ("async/age", "async/trainer_idle_s", "async/sampler_idle_s", "async/sync_s", "async/queue_depth"):
        if key in rows[-1]:
            out[key] = statistics.mean(r[key] for r in rows[1:])
    out["ages"] = [r.get("async/age") for r in rows]
    return out


def plot(results: list[dict], args: argparse.Namespace) -> None:
    """Reward per step of every arm, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in results:
        ax.plot(range(1, len(r["rewards"]) + 1), r["rewards"], marker="o", ms=3, label=r["arm"])
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward (correct + 0.5 format)" if args.task == "math" else "mean reward (share of the letter)")
    ax.set_title(f"{args.model}, {args.task}: reward per step by max_staleness")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.figure, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="math", choices=["math", "char_fill"])
    parser.add_argument("--letters", default="abcdefghij", help="char_fill: the letters asked for")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2, help="prompts per step")
    parser.add_argument("--group", type=int, default=4, help="completions per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--arms", nargs="+", default=["sync", "k0", "k1", "k2"])
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--figure", default=None, help="reward per step of every arm (PNG)")
    parser.add_argument("--plot-only", action="store_true", help="draw --figure from --json without running")
    args = parser.parse_args()
    if args.plot_only:
        with open(args.json) as f:
            saved = json.load(f)
        plot(saved["results"], argparse.Namespace(**{**saved["args"], "figure": args.figure}))
        return
    results = []
    for arm in args.arms:
        print(f"arm {arm}", flush=True)
        results.append(run_arm(arm, args))
        if args.json:  # after every arm: a run cut short keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "results": results}, f, indent=1)
    base = next((r for r in results if r["arm"] == "sync"), results[0])
    print(f"\n{args.model}, {args.steps} steps of {args.batch} prompts x G {args.group}, <= {args.max_new_tokens} "
          f"tokens; ratios to {base['arm']}")
    print(f"{'arm':5} {'wall s':>8} {'x':>6} {'steady s':>9} {'x':>6} {'tok/s':>7} {'x':>6} {'steady tok/s':>12} "
          f"{'x':>6} {'reward':>7} {'t.idle':>7} {'s.idle':>7} {'sync':>6} {'load':>10}")
    for r in results:
        tps, steady_tps = r["tokens"] / r["wall_s"], r["steady_tokens"] / r["steady_s"]
        r.update(tokens_per_s=tps, steady_tokens_per_s=steady_tps)
        b_tps, b_steady = base["tokens"] / base["wall_s"], base["steady_tokens"] / base["steady_s"]
        print(f"{r['arm']:5} {r['wall_s']:8.1f} {base['wall_s'] / r['wall_s']:6.2f} {r['steady_s']:9.1f} "
              f"{base['steady_s'] / r['steady_s']:6.2f} {tps:7.1f} {tps / b_tps:6.2f} {steady_tps:12.1f} "
              f"{steady_tps / b_steady:6.2f} {statistics.mean(r['rewards']):7.3f} "
              f"{r.get('async/trainer_idle_s', 0):7.2f} {r.get('async/sampler_idle_s', 0):7.2f} "
              f"{r.get('async/sync_s', 0):6.2f} {r['load_before']:4.1f}->{r['load_after']:4.1f}")
        print(f"      ages {r['ages']}")
    if args.figure:
        plot(results, args)


if __name__ == "__main__":
    main()
