"""HRPO vs GRPO on SmolLM2-135M-Instruct: the gate on real embeddings, at equal steps and equal time.

    OMP_NUM_THREADS=1 python experiments/real_model_hrpo.py [--seed 0] [--steps 15] [--prompts 4] [--lr 3e-6] [--threads 2] [--write-docs]

From the format warm-up of real_model_common (the reasoning span ends at ``<answer>``):
  * HRPO with the paper's recipe (the module's defaults: weight decay 0.1 on model, gate and
    Lambda; sampling temperature 0.5; tau 0.5; r_min 0.99; gate lr 1e-4, Lambda lr 1e-3;
    beta 0.005), ``--steps`` steps; GateMonitor logs the gate value and latent share;
  * GRPO at the same temperature and learning rate, run until it has trained as long as HRPO
    did (or for ``--steps`` if it is slower), with held-out accuracy at ``--steps`` (equal steps)
    and at the end (equal time).
Greedy held-out evaluation of HRPO mixes latents as its training rollouts do.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
from real_model_common import (HeldOut, History, OUT, ROOT, StopAfter, data, figure_link, figures_dir, held_out,
                               paired, parse_args, plot, command_line, release_memory, replace_section, save_json,
                               trainer, warm_up)

from callbacks.gate_monitor import GateMonitor
from lit_reason.modules import GRPO, HRPO

DOC = ROOT / "docs" / "real_model.md"


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--steps", type=int, default=15)
        parser.add_argument("--lr", type=float, default=3e-6)
        parser.add_argument("--prompts", type=int, default=4, help="prompts per step (x G 8 completions)")
        parser.add_argument("--items", type=int, default=128)

    args = parse_args(__doc__, options)
    problems = held_out(args.items)
    seed = args.seed
    warm = warm_up(seed, args.warmup_steps, args.sft_lr, 8, args.accelerator, args.model)
    common = dict(model=warm, prompt_format="chat", num_generations=8, max_new_tokens=args.new_tokens, temperature=0.5,
                  val_max_new_tokens=args.new_tokens, sampling_seed=seed, lr=args.lr, beta=0.005,
                  rewards={"correct": 1.0, "format": 0.5})
    start = time.perf_counter()

    L.seed_everything(seed)
    hrpo = HRPO(delimiter="<answer>", **common)
    hrpo_history, hrpo_held = History(f"HRPO s{seed}"), HeldOut(problems)
    trainer(args.steps, [GateMonitor(), hrpo_history, hrpo_held], args.accelerator).fit(
        hrpo, datamodule=data(seed, args.prompts))
    hrpo_seconds = sum(r["seconds"] for r in hrpo_history.rows)
    del hrpo
    release_memory()

    L.seed_everything(seed)
    grpo = GRPO(**common)
    # GRPO runs at least --steps (equal steps) and on until HRPO's training time (equal time)
    stop = StopAfter(hrpo_seconds, min_batches=args.steps)
    grpo_history, grpo_held = History(f"GRPO s{seed}"), HeldOut(problems, at=[args.steps])
    trainer(10 * args.steps, [grpo_history, stop, grpo_held], args.accelerator).fit(grpo, datamodule=data(seed, args.prompts))
    grpo_seconds = sum(r["seconds"] for r in grpo_history.rows)

    base = hrpo_held.points[0][2]
    equal_steps = grpo_held.at_batch(args.steps)[2]
    rows = {
        "HRPO": (len(hrpo_history.rows), hrpo_seconds, hrpo_held.points[-1][2]),
        "GRPO, equal steps": (args.steps, sum(r["seconds"] for r in grpo_history.rows[: args.steps]), equal_steps),
        "GRPO, equal time": (len(grpo_history.rows), grpo_seconds, grpo_held.points[-1][2]),
    }
    save_json({"hrpo": hrpo_history.rows, "grpo": grpo_history.rows, "rows": rows}, OUT / f"hrpo_s{seed}.json")
    lines = [f"Seed {seed}, from the format warm-up, {args.prompts} prompts x G 8 a step; both sample at temperature 0.5 "
             f"with lr {args.lr:g}, beta 0.005, "
             f"correct + 0.5 format; held-out greedy accuracy on {args.items} items (warm-up "
             f"{100 * sum(base) / len(base):.1f} %), gains with paired 95 % intervals.", "",
             "| arm | steps | train s | held-out acc | gain vs warm-up | vs HRPO |", "|---|---|---|---|---|---|"]
    hrpo_correct = rows["HRPO"][2]
    for name, (steps, seconds, correct) in rows.items():
        versus = "-" if name == "HRPO" else paired(hrpo_correct, correct)
        lines.append(f"| {name} | {steps} | {seconds:.0f} | {100 * sum(correct) / len(correct):.1f} % | "
                     f"{paired(base, correct)} | {versus} |")
    gate = [r.get("gate/a_mean", float("nan")) for r in hrpo_history.rows]
    share = [r.get("gate/latent_share", float("nan")) for r in hrpo_history.rows]
    lines += ["", f"Gate a (mean over mixed inputs): {gate[0]:.4f} -> {gate[-1]:.4f}; latent share sqrt(1 - a^2): "
                  f"{share[0]:.4f} -> {share[-1]:.4f}. Step time HRPO / GRPO: "
                  f"{hrpo_history.median_step_seconds / grpo_history.median_step_seconds:.2f}."]
    fig1 = plot({"latent share": share}, "HRPO: latent share of the mixed inputs", "sqrt(1 - a^2)",
                figures_dir(args) / f"real_model_hrpo_gate_s{seed}.png", smooth=1)
    fig2 = plot({"HRPO": [r.get("reward", float("nan")) for r in hrpo_history.rows],
                 "GRPO": [r.get("reward", float("nan")) for r in grpo_history.rows]},
                "training reward", "reward", figures_dir(args) / f"real_model_hrpo_reward_s{seed}.png")
    text = "\n".join(lines) + f"\n\n![]({figure_link(fig1, DOC)})\n![]({figure_link(fig2, DOC)})"
    text += f"\n\nTotal {time.perf_counter() - start:.0f} s ({args.threads} threads, {time.strftime('%Y-%m-%d')})."
    print(text)
    if args.write_docs:
        replace_section(DOC, f"real_model_hrpo_s{seed}",
                        f"### 4. HRPO vs GRPO, seed {seed} (`{command_line()}`)\n\n" + text)


if __name__ == "__main__":
    main()
