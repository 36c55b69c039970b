"""Intuitor (self-certainty, no labels) on SmolLM2-135M-Instruct: does accuracy rise, or collapse?

    OMP_NUM_THREADS=1 python experiments/real_model_intuitor.py [--lrs 3e-6 1e-5] [--steps 20] [--threads 1] [--write-docs]

From the format warm-up of real_model_common (seed 0), Intuitor trains on its own self-certainty
only (``correct`` is computed and logged, weight 0) at several learning rates; GRPO (correct + 0.5
format) runs the same number of steps from the same warm-up as the labelled reference. Every
``--eval-every`` steps: greedy accuracy on held-out items. Per step: self-certainty, completion
length, repeated-3-gram ratio, and the step at which SelfCertaintyMonitor first warns.
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning as L
from real_model_common import (HeldOut, History, OUT, ROOT, data, figure_link, figures_dir, held_out, paired,
                               parse_args, plot, command_line, release_memory, replace_section, save_json, trainer,
                               warm_up)

from callbacks.self_certainty_monitor import SelfCertaintyMonitor
from lit_reason.modules import GRPO, Intuitor

DOC = ROOT / "docs" / "real_model.md"


class WarningSteps(L.Callback):
    """The step at which each warning (e.g. SelfCertaintyMonitor's collapse signs) first appeared."""

    def __init__(self, caught: list) -> None:
        self.caught, self.steps = caught, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        while len(self.steps) < len(self.caught):
            message = str(self.caught[len(self.steps)].message)
            self.steps.append((trainer.global_step, message))


#: the monitor's warnings, by a phrase of each message
MONITOR_SIGNS = {"length": "completion length fell", "repeat": "are repeats", "distinct": "each group's completions differ",
                 "held-out drop": "heldout/accuracy fell"}


def run(name: str, module, args, problems: list) -> dict:
    # order: evaluate, then the monitor reads the held-out accuracy, then History (minus eval time)
    held = HeldOut(problems, args.eval_every)
    history = History(name, exclude=held)
    monitor = SelfCertaintyMonitor(ngram=3, window=5, watch="heldout/accuracy", watch_drop=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flags = WarningSteps(caught)
        trainer(args.steps, [held, monitor, flags, history], args.accelerator).fit(module,
                                                                                  datamodule=data(0, args.prompts))
    monitor_warnings = [(s, kind) for s, m in flags.steps for kind, phrase in MONITOR_SIGNS.items() if phrase in m]
    return {"name": name, "history": history.rows, "held_out": [(b, a) for b, a, _ in held.points],
            "first_correct": held.points[0][2], "last_correct": held.points[-1][2], "warnings": monitor_warnings,
            "median_step_seconds": history.median_step_seconds, "last_texts": held.last_texts[:16]}


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--lrs", type=float, nargs="+", default=[3e-6, 1e-5])
        parser.add_argument("--grpo-lr", type=float, default=3e-6)
        parser.add_argument("--steps", type=int, default=20)
        parser.add_argument("--eval-every", type=int, default=5)
        parser.add_argument("--prompts", type=int, default=4, help="prompts per step (x G 8 completions)")
        parser.add_argument("--items", type=int, default=128)

    args = parse_args(__doc__, options)
    problems = held_out(args.items)
    warm = warm_up(0, args.warmup_steps, args.sft_lr, 8, args.accelerator, args.model)
    common = dict(model=warm, prompt_format="chat", num_generations=8, max_new_tokens=args.new_tokens, temperature=1.0,
                  val_max_new_tokens=args.new_tokens, sampling_seed=0)
    start = time.perf_counter()
    runs = []
    for lr in args.lrs:
        L.seed_everything(0)
        runs.append(run(f"Intuitor lr {lr:g}", Intuitor(lr=lr, beta=0.005, rewards={"self_certainty": 1.0, "correct": 0.0},
                                                         **common), args, problems))
        release_memory()
    L.seed_everything(0)
    runs.append(run(f"GRPO lr {args.grpo_lr:g}", GRPO(lr=args.grpo_lr, rewards={"correct": 1.0, "format": 0.5}, **common),
                    args, problems))
    save_json(runs, OUT / "intuitor.json")

    grpo_time = runs[-1]["median_step_seconds"]
    lines = [f"From the format warm-up (seed 0), {args.steps} steps x {args.prompts} prompts x G 8, greedy accuracy on {args.items} "
             "held-out easy items; Intuitor trains on self-certainty only (beta 0.005), GRPO on correct + 0.5 format. "
             "Gain: last evaluation minus the warm-up, paired 95 % interval over the items.", "",
             "| run | held-out acc (by step) | gain | self-certainty first -> last 5 | length first -> last 5 | "
             "3-gram repeats last 5 | distinct share first -> last 5 | monitor warns at step (sign) | step time / GRPO |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        h = r["history"]
        avg = lambda key, part: sum(x.get(key, 0.0) for x in part) / max(len(part), 1)  # noqa: E731
        sc = f"{avg('rewards/self_certainty/mean', h[:5]):.3f} -> {avg('rewards/self_certainty/mean', h[-5:]):.3f}" \
            if "rewards/self_certainty/mean" in h[0] else "-"
        by_step = ", ".join(f"{s}: {100 * a:.0f}" for s, a in r["held_out"])
        warned = "; ".join(f"{s} ({kind})" for s, kind in r["warnings"]) or "none"
        lines.append(f"| {r['name']} | {by_step} | {paired(r['first_correct'], r['last_correct'])} | {sc} | "
                     f"{avg('completions/mean_length', h[:5]):.1f} -> {avg('completions/mean_length', h[-5:]):.1f} | "
                     f"{avg('completions/repeat_ngram_ratio', h[-5:]):.2f} | "
                     f"{avg('completions/distinct_share', h[:5]):.2f} -> {avg('completions/distinct_share', h[-5:]):.2f} | "
                     f"{warned} | "
                     f"{r['median_step_seconds'] / grpo_time:.2f} |")
    curves = {r["name"]: [x.get("rewards/correct/mean", float("nan")) for x in r["history"]] for r in runs}
    fig1 = plot(curves, "training accuracy of sampled completions", "share correct",
                figures_dir(args) / "real_model_intuitor_accuracy.png")
    fig2 = plot({r["name"]: [x.get("rewards/self_certainty/mean", float("nan")) for x in r["history"]] for r in runs[:-1]},
                "Intuitor: self-certainty of sampled completions", "self-certainty",
                figures_dir(args) / "real_model_intuitor_certainty.png")
    fig3 = plot({r["name"]: [x.get("completions/mean_length", float("nan")) for x in r["history"]] for r in runs},
                "completion length", "tokens", figures_dir(args) / "real_model_intuitor_length.png")
    text = "\n".join(lines) + "\n\n" + "\n".join(f"![]({figure_link(p, DOC)})" for p in (fig1, fig2, fig3))
    text += f"\n\nTotal {time.perf_counter() - start:.0f} s ({args.threads} threads, {time.strftime('%Y-%m-%d')})."
    print(text)
    if args.write_docs:
        replace_section(DOC, "real_model_intuitor", f"## 2. Intuitor: no labels (`{command_line()}`)\n\n" + text)


if __name__ == "__main__":
    main()
