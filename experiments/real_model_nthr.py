"""NTHR vs GRPO on SmolLM2-135M-Instruct: Lazy Likelihood Displacement as the paper defines it.

    OMP_NUM_THREADS=1 python experiments/real_model_nthr.py [--seeds 0] [--steps 15] [--prompts 4] [--lr 3e-6] [--threads 2] [--write-docs]

From the format warm-up of real_model_common, the same steps and sampling seed for:
  * GRPO;
  * NTHR (beta_nthr 1, eta adaptive: the paper's main setting), with the threshold's s+ summing
    over every pair of correct tokens (self terms included, the sum as written);
  * NTHR with the (k, k) self terms left out of s+ (``threshold_self_terms: false``);
  * NTHR with eta 0 (the paper's LLD analysis: selected tokens get no negative gradient).
``BatchLLDMonitor`` measures, every step, for each question of the batch with both correct and
wrong responses, the change of its correct responses' log-likelihood caused by that step's
update. Reported: mean Delta and share of questions displaced (Delta < 0), the share of negative
tokens NTHR selected, held-out greedy accuracy after training, and step time relative to GRPO.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
from real_model_common import (HeldOut, History, OUT, ROOT, data, figure_link, figures_dir, paired, parse_args, plot,
                               command_line, release_memory, replace_section, save_json, seed_results, trainer, warm_up)

from callbacks.batch_lld import BatchLLDMonitor
from lit_reason.modules import GRPO, NTHR

DOC = ROOT / "docs" / "real_model.md"
ARMS = {
    "GRPO": (GRPO, {}),
    "NTHR (eta adaptive)": (NTHR, {"beta_nthr": 1.0, "eta": "adaptive"}),
    "NTHR (eta adaptive, no self terms)": (NTHR, {"beta_nthr": 1.0, "eta": "adaptive", "threshold_self_terms": False}),
    "NTHR (eta 0)": (NTHR, {"beta_nthr": 1.0, "eta": 0.0}),
}


def run_arm(label: str, cls, hparams: dict, args, seed: int, problems: list) -> dict:
    L.seed_everything(seed)
    module = cls(**hparams)
    history, lld, held = History(label), BatchLLDMonitor(), HeldOut(problems)
    trainer(args.steps, [lld, history, held], args.accelerator).fit(module, datamodule=data(seed, args.prompts))
    return {"history": history.rows, "lld": lld.history, "held_out": [(b, a) for b, a, _ in held.points],
            "first_correct": held.points[0][2], "last_correct": held.points[-1][2],
            "median_step_seconds": history.median_step_seconds}


def run_seed(seed: int, args, problems: list) -> dict:
    start = time.perf_counter()
    warm = warm_up(seed, args.warmup_steps, args.sft_lr, 8, args.accelerator, args.model)
    common = dict(model=warm, prompt_format="chat", num_generations=8, max_new_tokens=args.new_tokens, temperature=1.0,
                  val_max_new_tokens=args.new_tokens, sampling_seed=seed, lr=args.lr,
                  rewards={"correct": 1.0, "format": 0.5})
    out = {}
    for name, (cls, extra) in ARMS.items():
        out[name] = run_arm(f"{name} s{seed}", cls, {**common, **extra}, args, seed, problems)
        release_memory()  # the arm's module is gone with run_arm's frame
    out["run"] = {"seconds": time.perf_counter() - start, "threads": args.threads, "date": time.strftime("%Y-%m-%d"),
                  "steps": args.steps, "prompts": args.prompts, "lr": args.lr}
    save_json(out, OUT / f"nthr_s{seed}.json")
    return out


def summary(results: list[dict], args) -> str:
    settings = {(r["run"]["steps"], r["run"]["prompts"], r["run"]["lr"]) for r in results}
    if len(settings) > 1:
        raise SystemExit(f"the saved seeds were run with different (steps, prompts, lr): {sorted(settings)}; rerun them alike")
    steps, prompts, lr = settings.pop()  # what the saved seeds were run with, not this invocation's flags
    lines = [f"From the format warm-up, {steps} steps x {prompts} prompts x G 8 (lr {lr:g}, correct + 0.5 "
             f"format) per arm and seed; LLD from BatchLLDMonitor (every step's own mixed questions); held-out "
             f"greedy accuracy on {args.items} items after training vs the warm-up and vs GRPO (the same items and "
             f"seeds), paired 95 % intervals.", "",
             "| arm | seeds | LLD mean Delta (nats) | questions displaced | mixed questions / step | negative tokens selected | "
             "held-out acc: warm-up -> after | gain | vs GRPO | step time / GRPO |", "|---|---|---|---|---|---|---|---|---|---|"]
    grpo_time = statistics.fmean(r["GRPO"]["median_step_seconds"] for r in results)
    grpo_last = [c for r in results for c in r["GRPO"]["last_correct"]]
    for name in ARMS:
        runs = [r[name] for r in results]
        deltas = [d for r in runs for h in r["lld"] for d in h["deltas"]]
        steps_with = [h for r in runs for h in r["lld"]]
        displaced = sum(d < 0 for d in deltas) / max(len(deltas), 1)
        selected = [row.get("nthr/frac_downweighted") for r in runs for row in r["history"] if "nthr/frac_downweighted" in row]
        first = [c for r in runs for c in r["first_correct"]]
        last = [c for r in runs for c in r["last_correct"]]
        lines.append(
            f"| {name} | {len(runs)} | {f'{statistics.fmean(deltas):+.3f}' if deltas else '-'} | {100 * displaced:.0f} % "
            f"| {len(deltas) / max(steps * len(runs), 1):.2f} ({len(steps_with)} steps) | "
            f"{'-' if not selected else f'{100 * statistics.fmean(selected):.1f} %'} | "
            f"{100 * sum(first) / len(first):.1f} -> {100 * sum(last) / len(last):.1f} % | {paired(first, last)} | "
            f"{'-' if name == 'GRPO' else paired(grpo_last, last)} | {statistics.fmean(r['median_step_seconds'] for r in runs) / grpo_time:.2f} |")
    return "\n".join(lines)


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seeds", type=int, nargs="+", default=[0])
        parser.add_argument("--steps", type=int, default=15)
        parser.add_argument("--prompts", type=int, default=4, help="prompts per step (x G 8 completions)")
        parser.add_argument("--lr", type=float, default=3e-6)
        parser.add_argument("--items", type=int, default=128)
        parser.add_argument("--from-saved", action="store_true",
                            help="pool the saved runs/real_model/nthr_s<seed>.json (seeds run apart) instead of training")

    args = parse_args(__doc__, options)
    results = seed_results(args, "nthr", run_seed)
    text = summary(results, args)
    curves = {name: [h.get("lld/batch_mean_delta", float("nan")) for h in results[0][name]["history"]] for name in ARMS}
    figure = plot(curves, f"LLD per step (seed {args.seeds[0]}): mean Delta of the batch's correct responses",
                  "nats", figures_dir(args) / "real_model_nthr_lld.png")
    walls = ", ".join(f"seed {seed} {r['run']['seconds']:.0f} s ({r['run']['threads']} threads, {r['run']['date']})"
                      for seed, r in zip(args.seeds, results))
    text += f"\n\n![]({figure_link(figure, DOC)})\n\nWall time, warm-up included: {walls}."
    print(text)
    if args.write_docs:
        replace_section(DOC, "real_model_nthr", f"## 3. NTHR vs GRPO: likelihood displacement (`{command_line()}`)\n\n" + text)


if __name__ == "__main__":
    main()
