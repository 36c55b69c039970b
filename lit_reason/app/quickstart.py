"""The main job: from a random-init tiny model to a measurably better puzzle solver, offline, on CPU.

    python -m lit_reason.app.quickstart [--method grpo|intuitor] [--seeds 0 1 2] [--out runs/quickstart]

Per seed, every phase is one ``lit-reason`` run of a YAML config in ``configs/quickstart/``:

    1. fit  sft.yaml       supervised warm-up on gold answers, exported with save_pretrained
    2. test eval.yaml      held-out accuracy of the warm-up ("before")
    3. fit  grpo.yaml      RL from the export (intuitor.yaml: self-certainty, no labels), exported
    4. test eval.yaml      held-out accuracy after RL ("after")
    5. (--baseline) fit sft.yaml again from the warm-up export, for the RL run's wall time, then
       test eval.yaml: the obvious baseline, "just keep doing SFT for as long as RL took"

Then it prints a table (before, after, gain per seed with a 95 % confidence interval of the
paired gain over the held-out items, and the mean over seeds) and writes ``<out>/report.md``,
which embeds the RL run's plots and shows held-out completions before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "quickstart"  # the repository's configs/
METHODS = ("grpo", "intuitor")
#: two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom (no scipy needed).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z_975 = 1.959964


# --------------------------------------------------------------------------- statistics
def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def sample_std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def paired_gain_ci(before: Sequence[float], after: Sequence[float]) -> tuple[float, float, float]:
    """``(gain, low, high)``: mean of ``after - before`` over the same items with a 95 % normal
    interval (the items are the sampling unit; n >= 200 makes the normal approximation fine)."""
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_gain_ci needs two equally long non-empty lists, got {len(before)} and {len(after)}")
    diffs = [a - b for a, b in zip(after, before)]
    gain, half = mean(diffs), Z_975 * sample_std(diffs) / math.sqrt(len(diffs))
    return gain, gain - half, gain + half


def seed_mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)`` over seeds with a Student-t 95 % interval (equal bounds for one seed)."""
    if not values:
        raise ValueError("seed_mean_ci needs at least one value")
    m = mean(values)
    if len(values) < 2:
        return m, m, m
    df = len(values) - 1
    t = T_975[df - 1] if df <= len(T_975) else Z_975
    half = t * sample_std(values) / math.sqrt(len(values))
    return m, m - half, m + half


# --------------------------------------------------------------------------- one run of the CLI
def run_cli(args: list[str]):
    """One ``lit-reason`` run in this process; returns the LightningCLI (trainer, model, datamodule)."""
    from lit_reason.app.cli import LitReasonCLI

    print("\n$ lit-reason " + " ".join(args), flush=True)
    saved, sys.argv = sys.argv, sys.argv[:1]  # the quickstart's own flags are not the CLI's (Lightning warns if both are set)
    try:
        return LitReasonCLI(args=args)
    finally:
        sys.argv = saved


def run_cli_in_subprocess(args: list[str], root: Path) -> int:
    """One ``lit-reason`` run in a fresh interpreter (same environment); returns the optimizer
    steps it took, read from its CSV log under ``root``."""
    import csv
    import subprocess

    print("\n$ lit-reason " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "lit_reason.app.cli", *args], check=True)
    logs = sorted(root.glob("lightning_logs/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return 0
    with open(logs[-1], newline="") as fh:
        return 1 + max((int(row["step"]) for row in csv.DictReader(fh) if row.get("step")), default=-1)


def training_report(trainer):
    """The run's :class:`callbacks.training_report.TrainingReport` (the quickstart configs add one)."""
    from callbacks.training_report import TrainingReport

    for callback in trainer.callbacks:
        if isinstance(callback, TrainingReport):
            return callback
    raise ValueError("the quickstart configs must list callbacks.training_report.TrainingReport in trainer.callbacks")


def export_policy(module, directory: str) -> str:
    """``save_pretrained`` of a module's policy and tokenizer (what ``model: <dir>`` loads)."""
    os.makedirs(directory, exist_ok=True)
    module.policy.save_pretrained(directory)
    module.tokenizer.save_pretrained(directory)
    return directory


@dataclass
class Evaluation:
    accuracy: float
    items: list[dict]  # per held-out item: prompt, completion, score, gold, task
    report_dir: str


@dataclass
class SeedResult:
    seed: int
    before: Evaluation
    after: Evaluation
    rl_report_dir: str
    sft_report_dir: str
    seconds: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)  # optimizer steps of each training run
    baseline: Evaluation | None = None  # the warm-up continued for the RL wall time (--baseline)

    @property
    def correct_before(self) -> list[float]:
        return [float((i["score"] or 0.0) >= 1.0) for i in self.before.items]

    @property
    def correct_after(self) -> list[float]:
        return [float((i["score"] or 0.0) >= 1.0) for i in self.after.items]

    @property
    def correct_baseline(self) -> list[float]:
        return [float((i["score"] or 0.0) >= 1.0) for i in self.baseline.items] if self.baseline else []


def evaluate(config_dir: Path, policy_dir: str, root: str, extra: list[str]) -> Evaluation:
    cli = run_cli(["test", "--config", str(config_dir / "eval.yaml"), "--model.model", policy_dir,
                   "--trainer.default_root_dir", root, *extra])
    report = training_report(cli.trainer)
    items = list(report.eval_items)
    if not items:
        raise ValueError("the evaluation saw no held-out items: the test split of eval.yaml is empty (data.num_val / data.eval_per_task)")
    accuracy = mean([float((i["score"] or 0.0) >= 1.0) for i in items])
    return Evaluation(accuracy, items, report.output_dir(cli.trainer))


#: The continued warm-up draws its training puzzles from data seed ``seed + BASELINE_DATA_SEED``:
#: fresh easy items rather than a replay of the warm-up's first ones (the held-out set is fixed).
BASELINE_DATA_SEED = 10_000


def max_time(seconds: float) -> str:
    """Lightning's ``trainer.max_time`` (``DD:HH:MM:SS``) for a budget, rounded up to whole seconds."""
    total = max(1, math.ceil(seconds))
    return f"{total // 86400:02d}:{total % 86400 // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def run_seed(seed: int, method: str, out: Path, config_dir: Path, extra: dict[str, list[str]],
             baseline: bool = False) -> SeedResult:
    """SFT -> eval -> RL -> eval (-> SFT continued for the RL wall time -> eval) for one seed;
    every run writes under ``out/seed<seed>/``."""
    base = out / f"seed{seed}"
    seconds: dict[str, float] = {}
    # The seed moves initialisation, data order and sampling of the training runs; the held-out
    # evaluation keeps its config's seed so every seed is scored on the same items.
    seed_args = ["--seed_everything", str(seed), "--model.init_args.sampling_seed", str(seed), "--data.init_args.seed", str(seed)]

    start = time.perf_counter()
    sft_dir = str(base / "sft_policy")
    sft = run_cli(["fit", "--config", str(config_dir / "sft.yaml"), *seed_args, "--model.export_dir", sft_dir,
                   "--trainer.default_root_dir", str(base / "sft"), *extra.get("sft", [])])
    sft_report = training_report(sft.trainer).output_dir(sft.trainer)
    seconds["sft"] = time.perf_counter() - start

    start = time.perf_counter()
    before = evaluate(config_dir, sft_dir, str(base / "eval_before"), extra.get("eval", []))
    seconds["eval_before"] = time.perf_counter() - start

    start = time.perf_counter()
    rl = run_cli(["fit", "--config", str(config_dir / f"{method}.yaml"), *seed_args, "--model.model", sft_dir,
                  "--trainer.default_root_dir", str(base / method), *extra.get("rl", [])])
    rl_dir = export_policy(rl.model, str(base / f"{method}_policy"))
    rl_report = training_report(rl.trainer).output_dir(rl.trainer)
    seconds[method] = time.perf_counter() - start

    start = time.perf_counter()
    after = evaluate(config_dir, rl_dir, str(base / "eval_after"), extra.get("eval", []))
    seconds["eval_after"] = time.perf_counter() - start
    if [i["prompt"] for i in before.items] != [i["prompt"] for i in after.items]:
        raise RuntimeError("the before and after evaluations saw different held-out items; they must be paired")
    steps = {"sft": int(sft.trainer.global_step), method: int(rl.trainer.global_step)}
    result = SeedResult(seed, before, after, rl_report, sft_report, seconds, steps)
    if baseline:
        # Same warm-up config and seed, from the warm-up's weights (fresh optimizer, same 10-step
        # warm-up of the lr), stopped by Lightning's max_time at the RL run's wall time. In a fresh
        # process: after a GRPO run in this one, SFT steps ran 4-25x slower (measured 2026-12-01),
        # which would starve the baseline of steps.
        start = time.perf_counter()
        more_dir = str(base / "sft_more_policy")
        steps["sft_more"] = run_cli_in_subprocess(
            ["fit", "--config", str(config_dir / "sft.yaml"), *seed_args, *extra.get("sft", []),
             "--data.init_args.seed", str(BASELINE_DATA_SEED + seed), "--model.model", sft_dir,
             "--model.export_dir", more_dir, "--trainer.max_steps", "-1", "--trainer.max_time", max_time(seconds[method]),
             "--trainer.default_root_dir", str(base / "sft_more")], base / "sft_more")
        seconds["sft_more"] = time.perf_counter() - start
        start = time.perf_counter()
        result.baseline = evaluate(config_dir, more_dir, str(base / "eval_sft_more"), extra.get("eval", []))
        seconds["eval_sft_more"] = time.perf_counter() - start
        if [i["prompt"] for i in before.items] != [i["prompt"] for i in result.baseline.items]:
            raise RuntimeError("the baseline evaluation saw different held-out items; it must be paired")
    return result


# --------------------------------------------------------------------------- table and report
def results_table(results: list[SeedResult], method: str) -> list[str]:
    """Markdown rows: one per seed (paired 95 % CI over items), then the mean over seeds."""
    n = len(results[0].before.items)
    lines = [f"| seed | held-out items | after SFT | after {method.upper()} | gain (points) | 95 % CI of the gain |",
             "|---|---|---|---|---|---|"]
    gains = []
    for r in results:
        gain, low, high = paired_gain_ci(r.correct_before, r.correct_after)
        gains.append(100 * gain)
        lines.append(f"| {r.seed} | {len(r.before.items)} | {100 * r.before.accuracy:.1f} % | {100 * r.after.accuracy:.1f} % "
                     f"| {100 * gain:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] |")
    if len(results) > 1:
        m, low, high = seed_mean_ci(gains)
        b = mean([100 * r.before.accuracy for r in results])
        a = mean([100 * r.after.accuracy for r in results])
        lines.append(f"| mean of {len(results)} | {n} | {b:.1f} % | {a:.1f} % | {m:+.1f} | [{low:+.1f}, {high:+.1f}] (t over seeds) |")
    return lines


def baseline_table(results: list[SeedResult], method: str) -> list[str]:
    """Markdown rows: RL against the warm-up continued for the same wall time (--baseline)."""
    name = method.upper()
    lines = [f"| seed | after SFT | SFT continued for {name}'s time | after {name} | {name} minus continued SFT (points) "
             "| 95 % CI | steps: SFT continued / " + name + " |", "|---|---|---|---|---|---|---|"]
    edges = []
    for r in results:
        if r.baseline is None:
            continue
        edge, low, high = paired_gain_ci(r.correct_baseline, r.correct_after)
        edges.append(100 * edge)
        lines.append(f"| {r.seed} | {100 * r.before.accuracy:.1f} % | {100 * r.baseline.accuracy:.1f} % | {100 * r.after.accuracy:.1f} % "
                     f"| {100 * edge:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] | {r.steps.get('sft_more', 0)} / {r.steps.get(method, 0)} |")
    if len(edges) > 1:
        m, low, high = seed_mean_ci(edges)
        with_baseline = [r for r in results if r.baseline is not None]
        b, c, a = (mean([100 * getattr(r, k).accuracy for r in with_baseline]) for k in ("before", "baseline", "after"))
        lines.append(f"| mean of {len(edges)} | {b:.1f} % | {c:.1f} % | {a:.1f} % | {m:+.1f} | [{low:+.1f}, {high:+.1f}] (t over seeds) | |")
    return lines


def comparison_samples(result: SeedResult, k: int = 6) -> list[dict]:
    """Held-out items to show before/after: items that flipped to correct first, then others."""
    pairs = list(zip(result.before.items, result.after.items))
    flipped = [p for p in pairs if (p[0]["score"] or 0) < 1 <= (p[1]["score"] or 0)]
    rest = [p for p in pairs if p not in flipped]
    chosen = flipped[: k // 2] + rest[: k - min(len(flipped), k // 2)]
    return [{"prompt": b["prompt"], "gold": b.get("gold"), "before": b["completion"], "before_score": b["score"],
             "after": a["completion"], "after_score": a["score"]} for b, a in chosen]


def write_report(out: Path, results: list[SeedResult], method: str, argv: list[str], total_seconds: float) -> Path:
    from callbacks.training_report import DEFAULT_METRICS, clip_text, fenced, file_stem

    first = results[0]
    lines = [f"# Quickstart: SFT warm-up, then {method.upper()}, measured on the held-out split", "",
             f"Command: `python -m lit_reason.app.quickstart {' '.join(argv)}`".rstrip(), "",
             f"Total wall time: {total_seconds / 60:.1f} min (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}).", "",
             "## Held-out accuracy (greedy)", "", *results_table(results, method), "",
             "Gain = after minus before on the same items; its 95 % interval is a normal interval over the paired "
             "per-item differences (and a Student-t interval over seeds in the last row).", ""]
    if any(r.baseline is not None for r in results):
        lines += [f"## Baseline: the SFT warm-up continued for {method.upper()}'s wall time", "", *baseline_table(results, method), "",
                  f"Same config, seed and held-out items; the warm-up restarts from its export (fresh optimizer) on fresh "
                  f"easy puzzles and stops at the {method.upper()} run's wall time.", ""]
    lines += [
             "| seed | " + " | ".join(f"{k} (s)" for k in first.seconds) + " |",
             "|---|" + "---|" * len(first.seconds)]
    for r in results:
        lines.append(f"| {r.seed} | " + " | ".join(f"{v:.0f}" for v in r.seconds.values()) + " |")
    lines += ["", f"## {method.upper()} training curves (seed {first.seed})", ""]
    for key, title in DEFAULT_METRICS.items():
        png = Path(first.rl_report_dir) / f"{file_stem(key)}.png"
        if png.exists():
            lines += [f"![{title}]({os.path.relpath(png, out)})", ""]
    sft_loss = Path(first.sft_report_dir) / "loss.png"
    if sft_loss.exists():
        lines += ["## SFT warm-up loss", "", f"![SFT loss]({os.path.relpath(sft_loss, out)})", ""]
    lines += [f"## Held-out completions before and after {method.upper()} (seed {first.seed})", ""]
    for i, s in enumerate(comparison_samples(first), 1):
        lines += [f"**{i}.** before: score {s['before_score']:g}, after: score {s['after_score']:g}", "",
                  "Prompt (end):", fenced(clip_text(s["prompt"], 300, keep_end=True)),
                  "Before:", fenced(clip_text(s["before"], 200) or "(empty)"),
                  "After:", fenced(clip_text(s["after"], 200) or "(empty)")]
        if s["gold"]:
            lines += ["One correct answer:", fenced(s["gold"])]
        lines.append("")
    lines += ["## Per-run reports", ""]
    for r in results:
        for name, d in (("SFT", r.sft_report_dir), (method.upper(), r.rl_report_dir), ("eval before", r.before.report_dir),
                        ("eval after", r.after.report_dir)):
            lines.append(f"- seed {r.seed} {name}: [{os.path.relpath(d, out)}/report.md]({os.path.relpath(d, out)}/report.md)")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- entry point
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lit_reason.app.quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=METHODS, default="grpo", help="RL method after the warm-up (default grpo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one full pipeline per seed (default: 0)")
    parser.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    parser.add_argument("--config-dir", default=str(CONFIG_DIR), help="directory holding sft/grpo/intuitor/eval.yaml")
    parser.add_argument("--sft-steps", type=int, help="override trainer.max_steps of the warm-up")
    parser.add_argument("--rl-steps", type=int, help="override trainer.max_steps of the RL run")
    parser.add_argument("--baseline", action="store_true",
                        help="also continue the SFT warm-up for the RL run's wall time and score it on the same items")
    parser.add_argument("--extra", action="append", default=[], metavar="PHASE:ARG",
                        help="one more lit-reason argument for a phase (sft, rl or eval), e.g. "
                             "'eval:--data.init_args.eval_per_task=32'; repeatable")
    return parser.parse_args(argv)


def phase_overrides(args: argparse.Namespace) -> dict[str, list[str]]:
    extra: dict[str, list[str]] = {"sft": [], "rl": [], "eval": []}
    if args.sft_steps is not None:
        extra["sft"] += ["--trainer.max_steps", str(args.sft_steps)]
    if args.rl_steps is not None:
        extra["rl"] += ["--trainer.max_steps", str(args.rl_steps)]
    for item in args.extra:
        phase, sep, arg = item.partition(":")
        if not sep or phase not in extra or not arg:
            raise SystemExit(f"quickstart: --extra {item!r}: write PHASE:ARG with PHASE one of {sorted(extra)}")
        extra[phase].append(arg)
    return extra


def main(argv: list[str] | None = None) -> list[SeedResult]:
    from lit_reason.utils.quiet import quiet_known_warnings

    quiet_known_warnings()  # the known-harmless library messages only (lit_reason/utils/quiet.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    config_dir = Path(args.config_dir)
    for name in ("sft.yaml", f"{args.method}.yaml", "eval.yaml"):
        if not (config_dir / name).is_file():
            raise SystemExit(f"quickstart: {config_dir / name} not found: run from the repository root or pass --config-dir")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = [run_seed(seed, args.method, out, config_dir, phase_overrides(args), args.baseline) for seed in args.seeds]
    total = time.perf_counter() - start
    report = write_report(out, results, args.method, argv, total)
    print("\n" + "\n".join(results_table(results, args.method)))
    if args.baseline:
        print("\n" + "\n".join(baseline_table(results, args.method)))
    print(f"\nTotal wall time {total / 60:.1f} min. Report: {report}", flush=True)
    return results


if __name__ == "__main__":
    main()
