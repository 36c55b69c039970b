"""GRPO's learning rate and prompts per step on SmolLM2-135M-Instruct: held-out accuracy over steps.

    OMP_NUM_THREADS=1 python experiments/real_model_grpo_sweep.py --grid 3e-6:4 1e-5:4 [--steps 30] [--threads 1] [--write-docs]

Why: the first GRPO run here (lr 1e-5, 2 prompts a step) lost accuracy against its warm-up. With
1-2 informative groups a step, each AdamW step at that lr follows one problem's noise. This
sweep, from the same seed-0 format warm-up, trains each ``lr:prompts`` arm (G 8, correct + 0.5
format, temperature 1.0) and scores the same held-out items every ``--eval-every`` steps.
Arms run one after another in this process (a grid over separate processes parallelises).
"""

from __future__ import annotations

import argparse
import time

import lightning as L
from real_model_common import (OUT, ROOT, HeldOut, History, command_line, data, held_out, paired, parse_args,
                               release_memory, replace_section, save_json, trainer, warm_up)

from lit_reason.modules import GRPO

DOC = ROOT / "docs" / "real_model.md"


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--grid", nargs="+", default=["3e-6:4", "1e-5:4"], help="lr:prompts arms")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--steps", type=int, default=30)
        parser.add_argument("--eval-every", type=int, default=10)
        parser.add_argument("--items", type=int, default=128)

    args = parse_args(__doc__, options)
    problems = held_out(args.items)
    warm = warm_up(args.seed, args.warmup_steps, args.sft_lr, 8, args.accelerator, args.model)
    start, runs = time.perf_counter(), []
    for arm in args.grid:
        lr, prompts = float(arm.split(":")[0]), int(arm.split(":")[1])
        L.seed_everything(args.seed)
        module = GRPO(model=warm, prompt_format="chat", num_generations=8, max_new_tokens=args.new_tokens,
                      temperature=1.0, lr=lr, rewards={"correct": 1.0, "format": 0.5},
                      val_max_new_tokens=args.new_tokens, sampling_seed=args.seed)
        held = HeldOut(problems, args.eval_every)
        history = History(f"lr {lr:g} x {prompts} prompts", exclude=held)
        trainer(args.steps, [held, history], args.accelerator).fit(module, datamodule=data(args.seed, prompts))
        runs.append({"lr": lr, "prompts": prompts, "held_out": [(b, a) for b, a, _ in held.points],
                     "first_correct": held.points[0][2], "last_correct": held.points[-1][2],
                     "median_step_seconds": history.median_step_seconds})
        del module
        release_memory()
    save_json(runs, OUT / f"grpo_sweep_s{args.seed}.json")
    lines = [f"Seed {args.seed} format warm-up, G 8, correct + 0.5 format, temperature 1.0, {args.steps} steps; greedy "
             f"accuracy on {args.items} held-out items by step; gain: last minus the warm-up, paired 95 % interval.", "",
             "| lr | prompts / step | held-out acc by step | gain | median s / step |", "|---|---|---|---|---|"]
    for r in runs:
        by_step = ", ".join(f"{s}: {100 * a:.1f}" for s, a in r["held_out"])
        lines.append(f"| {r['lr']:g} | {r['prompts']} | {by_step} | {paired(r['first_correct'], r['last_correct'])} | "
                     f"{r['median_step_seconds']:.1f} |")
    text = "\n".join(lines) + f"\n\nTotal {time.perf_counter() - start:.0f} s ({args.threads} threads, " \
                              f"{time.strftime('%Y-%m-%d')})."
    print(text)
    if args.write_docs:
        replace_section(DOC, "real_model_grpo_sweep",
                        f"### What fixed it: prompts per step and lr (`{command_line()}`)\n\n" + text)


if __name__ == "__main__":
    main()
