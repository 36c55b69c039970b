"""GRPO from SmolLM2-135M-Instruct against the obvious baseline: more SFT for the same wall time.

    python experiments/real_model_grpo.py --seeds 0 && python experiments/real_model_grpo.py --seeds 1
    python experiments/real_model_grpo.py --seeds 0 1 --from-saved --write-docs   # the pooled table

(Options: ``--steps 30 --lr 3e-6 --prompts 4 --threads 2``, the defaults. One seed takes about
15 min on the 2-core VM, so each invocation stays under 30 min.)

Per seed (see real_model_common for the task and why a format warm-up):
  1. warm-up: SFT on gold answers (``--warmup-steps`` x 8 problems), exported once and reused;
  2. held-out greedy accuracy and format rate of the warm-up ("before", the same items for all);
  3. GRPO from the warm-up for ``--steps`` steps (``--prompts`` x G 8, correct + 0.5 format reward);
  4. SFT from the warm-up, continued until it has trained as long (wall time) as GRPO did;
  5. held-out accuracy after each arm, with paired 95 % intervals over the items.
On a GPU the same script runs with ``--model <dir or hub name> --accelerator gpu --steps N``.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
from real_model_common import (Arm, History, OUT, ROOT, StopAfter, data, evaluate, figure_link, figures_dir,
                               over_seeds, paired, parse_args, plot, command_line, release_memory, replace_section,
                               save_json, seed_results, trainer, warm_up)

from lit_reason.modules import GRPO, SFT

DOC = ROOT / "docs" / "real_model.md"


def run_seed(seed: int, args, problems: list) -> dict:
    warm = warm_up(seed, args.warmup_steps, args.sft_lr, 8, args.accelerator, args.model)
    common = dict(model=warm, prompt_format="chat", val_max_new_tokens=args.new_tokens, sampling_seed=seed)
    probe = SFT(lr=args.sft_lr, max_length=256, **common)
    before = evaluate(probe, problems)
    del probe
    release_memory()

    L.seed_everything(seed)
    grpo = GRPO(num_generations=8, max_new_tokens=args.new_tokens, temperature=1.0, lr=args.lr,
                rewards={"correct": 1.0, "format": 0.5}, **common)
    grpo_history = History(f"GRPO s{seed}")
    start = time.perf_counter()
    trainer(args.steps, [grpo_history], args.accelerator).fit(grpo, datamodule=data(seed, args.prompts))
    grpo_seconds = time.perf_counter() - start
    after_grpo = evaluate(grpo, problems)
    budget = sum(r["seconds"] for r in grpo_history.rows)
    del grpo
    release_memory()

    L.seed_everything(seed)
    sft = SFT(lr=args.sft_lr, max_length=256, **common)
    sft_history, stop = History(f"SFT s{seed}"), StopAfter(budget)
    # data seed + 1: the continued warm-up sees new items, not the warm-up's again
    trainer(10_000, [sft_history, stop], args.accelerator).fit(sft, datamodule=data(seed + 1, 8))
    after_sft = evaluate(sft, problems)
    del sft
    release_memory()

    arms = [Arm("GRPO", len(grpo_history.rows), budget, after_grpo, grpo_history),
            Arm("SFT (continued warm-up)", len(sft_history.rows), stop.spent, after_sft, sft_history)]
    result = {
        "seed": seed, "before": before.__dict__, "grpo_wall_seconds": grpo_seconds, "settings": vars(args),
        "arms": {a.name: {"steps": a.steps, "train_seconds": a.seconds, "eval": a.evaluation.__dict__,
                          "history": a.history.rows} for a in arms},
    }
    save_json(result, OUT / f"grpo_vs_sft_s{seed}.json")
    return result


def table(results: list[dict], args) -> str:
    lines = [
        f"Held-out greedy accuracy on {args.items} easy items (same items for every run); warm-up "
        f"{args.warmup_steps} SFT steps x 8 problems at lr {args.sft_lr:g}; GRPO {args.steps} steps x {args.prompts} "
        f"prompts x G 8, lr {args.lr:g}, reward correct + 0.5 format; SFT continued for GRPO's training wall time. "
        "Gains in points with paired 95 % intervals over the items.", "",
        "| seed | warm-up acc / format | GRPO acc / format | SFT acc / format | GRPO - warm-up | SFT - warm-up | GRPO - SFT | steps GRPO / SFT | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    gains = {"GRPO": [], "SFT": [], "diff": []}
    for r in results:
        b = r["before"]
        g, s = r["arms"]["GRPO"], r["arms"]["SFT (continued warm-up)"]
        ge, se = g["eval"], s["eval"]
        acc = lambda e: sum(e["correct"]) / len(e["correct"])  # noqa: E731
        fmt = lambda e: sum(e["formatted"]) / len(e["formatted"])  # noqa: E731
        lines.append(
            f"| {r['seed']} | {100 * acc(b):.1f} / {100 * fmt(b):.0f} % | {100 * acc(ge):.1f} / {100 * fmt(ge):.0f} % | "
            f"{100 * acc(se):.1f} / {100 * fmt(se):.0f} % | {paired(b['correct'], ge['correct'])} | "
            f"{paired(b['correct'], se['correct'])} | {paired(se['correct'], ge['correct'])} | "
            f"{g['steps']} / {s['steps']} | {g['train_seconds']:.0f} / {s['train_seconds']:.0f} |")
        gains["GRPO"].append(acc(ge) - acc(b))
        gains["SFT"].append(acc(se) - acc(b))
        gains["diff"].append(acc(ge) - acc(se))
    if len(results) > 1:
        lines.append(f"| mean (t-interval over seeds) | | | | {over_seeds(gains['GRPO'])} | {over_seeds(gains['SFT'])} | "
                     f"{over_seeds(gains['diff'])} | | |")
    return "\n".join(lines)


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                            help="seeds run in this invocation (about 15 min each on 2 cores); pool with --from-saved")
        parser.add_argument("--steps", type=int, default=30)
        parser.add_argument("--lr", type=float, default=3e-6)
        parser.add_argument("--prompts", type=int, default=4, help="GRPO prompts per step (x G 8 completions)")
        parser.add_argument("--items", type=int, default=256)
        parser.add_argument("--from-saved", action="store_true",
                            help="rebuild the table from the saved runs/real_model/grpo_vs_sft_s<seed>.json (seeds run apart)")

    args = parse_args(__doc__, options)
    results = seed_results(args, "grpo_vs_sft", run_seed)
    text = table(results, args)
    figures = []
    for r in results:
        hist = r["arms"]["GRPO"]["history"]
        figures.append(plot({"reward": [h.get("reward", float("nan")) for h in hist],
                             "accuracy": [h.get("accuracy", float("nan")) for h in hist]},
                            f"GRPO on SmolLM2-135M-Instruct, seed {r['seed']}", "training rollouts",
                            figures_dir(args) / f"real_model_grpo_s{r['seed']}.png"))
    text += "\n\n" + "\n".join(f"![GRPO curve]({figure_link(p, DOC)})" for p in figures)
    total = sum(r["grpo_wall_seconds"] + r["arms"]["SFT (continued warm-up)"]["train_seconds"] for r in results)
    text += f"\n\nTraining {total:.0f} s in all (seeds {', '.join(map(str, args.seeds))}, "
    text += f"{args.threads} threads, {time.strftime('%Y-%m-%d')})."
    print(text)
    if args.write_docs:
        replace_section(DOC, "real_model_grpo", f"## 1. GRPO vs continued SFT (`{command_line()}`)\n\n" + text)


if __name__ == "__main__":
    main()
