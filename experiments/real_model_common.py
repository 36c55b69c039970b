"""Shared pieces of the real-model experiments (``experiments/real_model_*.py``).

The task: seeded easy arithmetic (``MathDataModule(source="synthetic", difficulty="easy")``) with
the chat template and the project's ``<answer>`` system prompt. The instruct model often computes
the sum but never uses the tags (0 % before training), so every experiment starts from a short
FORMAT WARM-UP: SFT on gold answers for a few steps. Why this signal and not another: the
warm-up is the smallest change that makes groups mixed (some right, some wrong) while leaving
accuracy far from 100 %, it needs no change to the reward a user configures, and it gives the
obvious baseline for RL after a warm-up: continuing the warm-up for the same time.

Held-out items are synthetic items at the validation offset, with data seed 0 for every run, so
all arms and seeds are scored on the same items and their differences can be paired.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules import MathDataModule  # noqa: E402
from datamodules.math_data import VAL_OFFSET  # noqa: E402
from lit_reason.tasks.answer import extract_answer  # noqa: E402
from lit_reason.app.quickstart import export_policy, paired_gain_ci, seed_mean_ci  # noqa: E402

MODEL = "smollm2-135m-instruct"
OUT = ROOT / "runs" / "real_model"


def data(seed: int, batch_size: int, difficulty: str = "easy") -> MathDataModule:
    return MathDataModule(source="synthetic", difficulty=difficulty, prompt_format="chat", system_prompt="default",
                          num_train=100_000, num_val=0, batch_size=batch_size, seed=seed)


def held_out(n: int, difficulty: str = "easy") -> list:
    dm = data(0, 1, difficulty)
    return [dm.synthetic_problem(i, offset=VAL_OFFSET) for i in range(n)]


def trainer(steps: int, callbacks: Sequence[L.Callback] = (), accelerator: str = "auto") -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, callbacks=list(callbacks))


class History(L.Callback):
    """Every logged metric of every training step, plus the step's wall time (printed as it goes).
    List it after the callbacks that log and before any that evaluate (HeldOut), so its row has
    the step's metrics and its time excludes evaluation."""

    def __init__(self, label: str, every: int = 5, exclude: "HeldOut | None" = None) -> None:
        self.label, self.every, self.rows, self.exclude = label, every, [], exclude
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        spent = time.perf_counter() - self._start
        if self.exclude is not None:  # a HeldOut listed before this callback evaluated inside the step
            spent -= self.exclude.take_seconds()
        row.update(step=trainer.global_step, seconds=spent)
        self.rows.append(row)
        if trainer.global_step % self.every == 0 or trainer.global_step == trainer.max_steps:
            shown = {k: round(row[k], 3) for k in ("reward", "accuracy", "loss", "completions/mean_length") if k in row}
            print(f"[{self.label}] step {trainer.global_step}/{trainer.max_steps} {row['seconds']:.1f}s {shown}", flush=True)

    def series(self, key: str) -> list[float]:
        return [r.get(key, math.nan) for r in self.rows]

    @property
    def median_step_seconds(self) -> float:
        return statistics.median(r["seconds"] for r in self.rows[1:] or self.rows)


class StopAfter(L.Callback):
    """Stops training once the training steps have taken ``seconds`` of wall time in all (and at
    least ``min_batches`` steps ran)."""

    def __init__(self, seconds: float, min_batches: int = 0) -> None:
        self.budget, self.min_batches, self.spent, self.batches, self._start = seconds, min_batches, 0.0, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.spent += time.perf_counter() - self._start
        self.batches += 1
        if self.spent >= self.budget and self.batches >= self.min_batches:
            trainer.should_stop = True


class HeldOut(L.Callback):
    """Greedy held-out evaluation before training, every ``every`` batches, at the listed batch
    counts, and at the end. ``points``: (batches trained, accuracy, per-item correct); the newest
    accuracy is also put in ``trainer.callback_metrics["heldout/accuracy"]`` (for a callback that
    watches it, listed after this one) and the last texts are kept."""

    def __init__(self, problems: list, every: int = 0, at: Sequence[int] = ()) -> None:
        self.problems, self.every, self.at, self.points = problems, every, set(at), []
        self.batches, self.seconds, self.last_texts = 0, 0.0, []

    def take_seconds(self) -> float:
        """Evaluation time since the last call (History subtracts it from the step's time)."""
        spent, self.seconds = self.seconds, 0.0
        return spent

    def _measure(self, module) -> None:
        if not self.points or self.points[-1][0] != self.batches:
            start = time.perf_counter()
            result = evaluate(module, self.problems)
            self.seconds += time.perf_counter() - start
            self.points.append((self.batches, result.accuracy, result.correct))
            self.last_texts = result.texts
            if module._trainer is not None:
                module.trainer.callback_metrics["heldout/accuracy"] = torch.tensor(result.accuracy)

    def on_train_start(self, trainer, module) -> None:
        self._measure(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if (self.every and self.batches % self.every == 0) or self.batches in self.at:
            self._measure(module)

    def on_train_end(self, trainer, module) -> None:
        self._measure(module)

    def at_batch(self, batches: int) -> tuple[int, float, list[float]]:
        return next(p for p in self.points if p[0] == batches)


@dataclass
class Evaluation:
    correct: list[float]
    formatted: list[float]  # the completion has an <answer> block
    lengths: list[int]
    texts: list[str]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct)

    @property
    def format_rate(self) -> float:
        return sum(self.formatted) / len(self.formatted)


@torch.no_grad()
def evaluate(module, problems: list, batch: int = 64) -> Evaluation:
    """Greedy completions (the module's validation engine) of the held-out problems."""
    out = Evaluation([], [], [], [])
    for start in range(0, len(problems), batch):
        chunk = problems[start:start + batch]
        rollout = module.generate(chunk, engine=module.val_engine, repeats=1)
        for problem, text, length in zip(chunk, rollout.texts, rollout.lengths.tolist()):
            out.correct.append(float(problem.score(text) >= 1.0))
            out.formatted.append(float(extract_answer(text) is not None))
            out.lengths.append(int(length))
            out.texts.append(text)
    return out


def warm_up(seed: int, steps: int, lr: float, batch_size: int, accelerator: str = "auto", model: str = MODEL) -> str:
    """The format warm-up's ``save_pretrained`` directory (trained once per seed, then reused)."""
    from lit_reason.modules import SFT

    directory = OUT / f"warmup-{model.replace('/', '_')}-s{seed}-{steps}x{batch_size}-lr{lr:g}"
    if (directory / "config.json").is_file():
        return str(directory)
    L.seed_everything(seed)
    module = SFT(model=model, prompt_format="chat", lr=lr, max_length=256, val_max_new_tokens=32, sampling_seed=seed)
    trainer(steps, [History(f"warm-up s{seed}", every=10)], accelerator).fit(module, datamodule=data(seed, batch_size))
    return export_policy(module, str(directory))


def release_memory() -> None:
    """Free the finished arm's module (the caller has dropped it) and hand the freed heap back to the
    OS: glibc keeps it otherwise, and a process running four arms in a row grew to 10.9 GB RSS
    where one arm needs under 6."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def paired(before: Sequence[float], after: Sequence[float]) -> str:
    gain, low, high = paired_gain_ci(before, after)
    return f"{100 * gain:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def over_seeds(values: Sequence[float]) -> str:
    m, low, high = seed_mean_ci(values)
    return f"{100 * m:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def plot(curves: dict[str, list[float]], title: str, ylabel: str, path: Path, smooth: int = 5) -> Path:
    """One PNG: each curve (moving average over ``smooth`` steps) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in curves.items():
        smoothed = [statistics.fmean([v for v in values[max(0, i - smooth + 1): i + 1] if not math.isnan(v)] or [math.nan])
                    for i in range(len(values))]
        ax.plot(range(1, len(values) + 1), smoothed, label=label)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figures_dir(args: argparse.Namespace) -> Path:
    """docs/figures with ``--write-docs``, else the run directory (a smoke run leaves the docs alone)."""
    return ROOT / "docs" / "figures" if args.write_docs else OUT / "figures"


def figure_link(path: Path, doc: Path) -> str:
    """``path`` as the doc links it (relative when it lies under the doc's folder)."""
    return str(path.relative_to(doc.parent)) if path.is_relative_to(doc.parent) else str(path)


def save_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def seed_results(args: argparse.Namespace, stem: str, run_seed) -> list[dict]:
    """One result per seed of ``args.seeds``: ``run_seed(seed, args, held_out_items)`` now, or with
    ``--from-saved`` the ``OUT/<stem>_s<seed>.json`` that earlier invocations saved, so seeds run
    apart (each invocation under 30 min on the 2-core VM) pool into one table."""
    if not getattr(args, "from_saved", False):
        problems = held_out(args.items)
        return [run_seed(seed, args, problems) for seed in args.seeds]
    missing = [seed for seed in args.seeds if not (OUT / f"{stem}_s{seed}.json").exists()]
    if missing:
        raise SystemExit(f"--from-saved: no saved run of seed {missing[0]} ({OUT / f'{stem}_s{missing[0]}.json'}): "
                         f"run it first with --seeds {missing[0]}")
    return [json.loads((OUT / f"{stem}_s{seed}.json").read_text()) for seed in args.seeds]


def command_line() -> str:
    """How this script was run (without ``--write-docs``), for the heading of the section it writes."""
    args = [a for a in sys.argv[1:] if a != "--write-docs"]
    return " ".join([f"experiments/{Path(sys.argv[0]).name}", *args])


def replace_section(doc: Path, marker: str, text: str) -> None:
    """Write ``text`` between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` of ``doc``."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    current = doc.read_text() if doc.exists() else "# Real-model experiments\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    doc.write_text(current)


@dataclass
class Arm:
    """One training arm's outcome."""

    name: str
    steps: int
    seconds: float
    evaluation: Evaluation
    history: History = field(repr=False, default=None)


def parse_args(doc: str, configure) -> argparse.Namespace:
    """The options every real-model experiment shares, plus its own (``configure(parser)``); sets
    the thread count before anything runs."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    configure(parser)
    parser.add_argument("--warmup-steps", type=int, default=20, help="format warm-up: SFT steps x 8 problems")
    parser.add_argument("--sft-lr", type=float, default=1e-5)
    parser.add_argument("--new-tokens", type=int, default=24, help="completion length limit")
    parser.add_argument("--model", default=MODEL, help="any name or path load_policy takes")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true", help="write the result into docs/real_model.md")
    args = parser.parse_args()
    device_threads(args.threads)
    return args


def device_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
