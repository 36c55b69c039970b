"""The small measured runs of docs/algorithms.md: each configs/grpo/<family>.yaml trained in full
through the CLI, one subprocess at a time, next to the plain GRPO config (same seed, data, model).

Prints per config: the mean training reward over the first and the last 5 rollouts, the wall
time, and for dynamic sampling the generated / kept group totals and the reward over every
generated completion (its ``reward`` covers only the informative groups it trains on).

    python benchmarks/algorithms.py [--configs gspo cispo ...] [--steps N] [--letters a]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["toy_char_fill", "gspo", "cispo", "rloo", "reinforce_pp", "top_entropy", "dynamic_sampling", "grpo_mu2"]
#: plain GRPO with the rollout reuse of gspo.yaml / cispo.yaml (mu 2 x 2 minibatches, 8 rollouts)
VARIANTS = {"grpo_mu2": ("toy_char_fill", ["--model.init_args.num_iterations=2", "--model.init_args.minibatch_size=16",
                                           "--trainer.max_steps=32"])}


def run(name: str, steps: int | None, letters: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        config, extra = VARIANTS.get(name, (name, []))
        cmd = [sys.executable, "-m", "lit_reason.app.cli", "fit", "--config", str(ROOT / "configs" / "grpo" / f"{config}.yaml"),
               f"--trainer.default_root_dir={out}", "--trainer.enable_progress_bar=false",
               "--trainer.enable_model_summary=false", *extra]
        if steps:
            cmd.append(f"--trainer.max_steps={steps}")
        if letters:
            cmd.append(f"--data.init_args.letters={letters}")
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        (metrics,) = Path(out).rglob("metrics.csv")
        rows = [r for r in csv.DictReader(metrics.open()) if r.get("reward")]
    rewards = [float(r["reward"]) for r in rows]
    result = {"rollouts": len(rows), "first5": sum(rewards[:5]) / 5, "last5": sum(rewards[-5:]) / 5, "seconds": seconds}
    if rows and rows[-1].get("dynamic_sampling/total_generated_groups"):
        result["generated_groups"] = float(rows[-1]["dynamic_sampling/total_generated_groups"])
        result["kept_groups"] = float(rows[-1]["dynamic_sampling/total_kept_groups"])
        generated = [float(r["dynamic_sampling/generated_reward_mean"]) for r in rows]
        result["generated_first5"], result["generated_last5"] = sum(generated[:5]) / 5, sum(generated[-5:]) / 5
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=FAMILIES)
    parser.add_argument("--steps", type=int, default=None, help="override trainer.max_steps (optimizer steps)")
    parser.add_argument("--letters", default=None, help="override data.letters (a = the easiest learning check)")
    args = parser.parse_args()
    print(f"{'config':18s} {'rollouts':>8s} {'reward first5':>13s} {'last5':>7s} {'wall s':>7s}  dynamic sampling")
    for name in args.configs:
        r = run(name, args.steps, args.letters)
        extra = (f"generated {r['generated_groups']:.0f} / kept {r['kept_groups']:.0f} groups; reward over every "
                 f"generated completion {r['generated_first5']:.3f} -> {r['generated_last5']:.3f}"
                 if "generated_groups" in r else "")
        print(f"{name:18s} {r['rollouts']:8d} {r['first5']:13.3f} {r['last5']:7.3f} {r['seconds']:7.1f}  {extra}", flush=True)


if __name__ == "__main__":
    main()
