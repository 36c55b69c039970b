"""GRPO vs NTHR from the same tiny warm start: does NTHR shrink Lazy Likelihood Displacement?

    OMP_NUM_THREADS=1 python experiments/nthr_vs_grpo.py [--seeds 0 1] [--steps 30] [--write-docs]

1. Warm start (shared by every run): the ``tiny`` preset, supervised for a few steps on the gold
   answers of ``ToyDataModule(task="add")`` so that sampled groups are mixed (some right, some
   wrong): RL from a random init never sees a correct completion on this task.
2. For each seed, GRPO and NTHR (beta_nthr 1 with eta adaptive, and with eta 0 as in the paper's
   LLD analysis; plus beta_nthr 0, eta 0, a much larger selection) run the same steps from that
   warm start, with the same sampling seed.
3. Training uses 16 problems only, and they are the LLD monitor's probes (with their gold
   completions, which is what a correct sampled completion looks like on this task), so the
   monitor measures the paper's quantity: the change in log-likelihood of the correct responses
   of the questions being trained on, across every training step. Seeds change the sampling and
   the data order.

Printed (and with ``--write-docs`` written into docs/nthr.md): mean over steps of lld/mean_delta
and lld/share_displaced, NTHR's share of down-weighted negative tokens, the training accuracy of
the sampled completions (last 10 steps) and greedy accuracy on 200 problems of another seed (the
task has only 100 distinct sums, so this is not a held-out set). CPU, a few minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks.lld_monitor import LLDMonitor  # noqa: E402
from datamodules import ToyDataModule  # noqa: E402
from datamodules.toy import make_toy_problem  # noqa: E402
from lit_reason.modules import GRPO, NTHR  # noqa: E402
from lit_reason.algorithms.objectives import token_logps  # noqa: E402
from lit_reason.rollout import positions_from_mask  # noqa: E402

COMMON = dict(model="tiny", num_generations=8, max_new_tokens=8, temperature=1.0, prompt_format="plain",
              eps_low=0.2, loss_type="grpo")
METHODS = {
    "GRPO": (GRPO, {}),
    "NTHR (eta adaptive)": (NTHR, {"beta_nthr": 1.0, "eta": "adaptive"}),
    "NTHR (eta 0)": (NTHR, {"beta_nthr": 1.0, "eta": 0.0}),
    "NTHR (beta_nthr 0, eta 0)": (NTHR, {"beta_nthr": 0.0, "eta": 0.0}),
}
DOC_BEGIN, DOC_END = "<!-- nthr_vs_grpo:begin -->", "<!-- nthr_vs_grpo:end -->"


def warm_start(sft_steps: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Teacher-forced supervised steps on gold answers of the add task: a partly competent policy."""
    L.seed_everything(seed)
    module = GRPO(**COMMON)
    problems = [make_toy_problem("add", 0, i) for i in range(512)]
    opt = torch.optim.AdamW(module.policy.parameters(), lr=3e-3)
    encoder = LLDMonitor(probes=[("", "x")])
    gen = torch.Generator().manual_seed(seed)
    for _ in range(sft_steps):
        batch = [problems[i] for i in torch.randint(0, len(problems), (32,), generator=gen).tolist()]
        p_ids, p_mask = module.encode_prompts([p.prompt for p in batch])
        c_ids, c_mask = encoder.encode_completions(module, [p.answer for p in batch])
        ids, mask = torch.cat([p_ids, c_ids], 1), torch.cat([p_mask, c_mask], 1)
        logits = module.policy(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                               logits_to_keep=c_ids.shape[1] + 1).logits[:, :-1]
        loss = -(token_logps(logits, c_ids) * c_mask).sum() / c_mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in module.policy.state_dict().items()}


def greedy_accuracy(module: GRPO, n: int = 200) -> float:
    problems = [make_toy_problem("add", 777, i) for i in range(n)]
    rollout = module.generate(problems, engine=module.val_engine, repeats=1)
    return sum(p.score(t) >= 1.0 for p, t in zip(problems, rollout.texts)) / n


class Trace(L.Callback):
    """Per-step training accuracy and NTHR's down-weighted share."""

    def __init__(self) -> None:
        self.accuracy, self.downweighted = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        scores = outputs["scores"]
        self.accuracy.append(sum(s >= 1.0 for s in scores) / len(scores))
        self.downweighted.append(getattr(pl_module, "nthr_stats", {}).get("nthr/frac_downweighted", float("nan")))


def run(name: str, warm: dict, seed: int, steps: int, lr: float, probes: list) -> dict[str, float]:
    cls, extra = METHODS[name]
    L.seed_everything(seed)
    module = cls(**COMMON, **extra, lr=lr, sampling_seed=seed)
    module.policy.load_state_dict(warm)
    monitor, trace = LLDMonitor(probes=probes, epsilon=0.0), Trace()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor, trace])
    # train on the probe problems themselves: LLD is about the questions being trained on
    trainer.fit(module, ToyDataModule(task="add", train_size=len(probes), batch_size=8, val_size=0, seed=0))
    return {
        "mean_delta": statistics.fmean(h["lld/mean_delta"] for h in monitor.history),
        "share_displaced": statistics.fmean(h["lld/share_displaced"] for h in monitor.history),
        "downweighted": statistics.fmean(trace.downweighted) if cls is NTHR else float("nan"),
        "train_acc": statistics.fmean(trace.accuracy[-10:]),
        "greedy_acc": greedy_accuracy(module),
    }


def table(rows: dict[str, list[dict]], start_acc: float, seeds: list[int], steps: int, sft_steps: int, lr: float) -> str:
    def cell(values, fmt):
        vals = [v for v in values if v == v]
        if not vals:
            return "-"
        spread = " ± " + fmt.replace("+", "").format(statistics.stdev(vals)) if len(vals) > 1 else ""
        return fmt.format(statistics.fmean(vals)) + spread

    lines = [
        f"tiny preset, add task, warm start = {sft_steps} supervised steps (greedy accuracy {start_acc:.3f}); "
        f"{steps} RL steps x 8 prompts x G=8 on the 16 probe problems, lr {lr:g}, seeds {seeds}; mean ± std over seeds.",
        "",
        "| method | LLD mean delta (nats/probe/step) | share of probes displaced | negative tokens down-weighted "
        "| train accuracy (last 10 steps) | greedy accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for name, results in rows.items():
        lines.append("| " + " | ".join([
            name,
            cell([r["mean_delta"] for r in results], "{:+.4f}"),
            cell([r["share_displaced"] for r in results], "{:.3f}"),
            cell([r["downweighted"] for r in results], "{:.3f}"),
            cell([r["train_acc"] for r in results], "{:.3f}"),
            cell([r["greedy_acc"] for r in results], "{:.3f}"),
        ]) + " |")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "nthr.md"
    doc = path.read_text()
    if DOC_BEGIN not in doc or DOC_END not in doc:
        raise SystemExit(f"{path} has no {DOC_BEGIN} ... {DOC_END} block to fill")
    block = f"{DOC_BEGIN}\n{text}\n{DOC_END}"
    path.write_text(re.sub(re.escape(DOC_BEGIN) + ".*?" + re.escape(DOC_END), lambda _: block, doc, flags=re.S))
    print(f"wrote the table into {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sft-steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    warm = warm_start(args.sft_steps)
    probe_problems = [make_toy_problem("add", 0, i) for i in range(16)]
    probes = [(p.prompt, p.answer) for p in probe_problems]
    start_module = GRPO(**COMMON)
    start_module.policy.load_state_dict(warm)
    start_acc = greedy_accuracy(start_module)
    rows = {name: [run(name, warm, seed, args.steps, args.lr, probes) for seed in args.seeds] for name in METHODS}
    text = table(rows, start_acc, args.seeds, args.steps, args.sft_steps, args.lr)
    print(text)
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
