"""TrainingReport: PNG plots of the logged curves and sample completions, as one Markdown file.

Works with any module of the family (and any module that logs the same names): each training
step it reads the metrics the module logged (``trainer.callback_metrics``), and from the step's
``outputs`` (GRPO's dict: ``rollout``, ``problems``, ``scores``) it keeps the first
``num_samples`` completions of the first and of the latest step. Validation and test outputs
give greedy samples the same way, and a test run also writes every evaluated item to
``eval_items.jsonl`` (prompt, completion, score) so before/after comparisons can be paired.

Files, in ``dirpath`` (default: ``trainer.log_dir``) at the end of ``fit`` and of ``test``:
``report.md``, one ``<metric>.png`` per metric seen, ``history.json`` and ``eval_items.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

#: metric key -> plot title. Keys a run never logs are skipped (``kl`` needs beta > 0,
#: self-certainty needs Intuitor, ``loss`` is SFT's and GRPO's surrogate loss).
DEFAULT_METRICS: dict[str, str] = {
    "reward": "reward (mean over completions)",
    "accuracy": "training accuracy (share of correct completions)",
    "val/accuracy": "validation accuracy (greedy)",
    "kl": "KL to the reference policy (k3)",
    "completions/mean_length": "completion length (tokens)",
    "rewards/self_certainty/mean": "self-certainty (mean)",
    "rewards/correct/mean": "correctness reward (mean)",
    "loss": "loss",
}
#: A reward source's mean, as GRPO logs it for every entry of ``model.rewards``.
REWARD_SOURCE = re.compile(r"rewards/(.+)/mean")
#: Characters of a prompt / completion shown in the report (prompts keep their END, where the question is).
PROMPT_CHARS, COMPLETION_CHARS = 400, 300


@dataclass
class Sample:
    """One completion as shown in a report."""

    prompt: str
    completion: str
    score: float | None
    gold: str | None = None


def to_float(value: Any) -> float | None:
    """A finite float from a tensor / number, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def file_stem(metric: str) -> str:
    """``completions/mean_length`` -> ``completions_mean_length`` (safe as a file name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") or "metric"


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` points (the first points average what exists)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def samples_from_outputs(outputs: Any, limit: int) -> list[Sample]:
    """The first ``limit`` completions of a step's outputs (a dict with ``rollout`` texts and
    ``problems``; ``scores`` optional). Anything else gives no samples."""
    if not isinstance(outputs, dict) or "problems" not in outputs:
        return []
    problems = list(outputs["problems"])
    rollout = outputs.get("rollout")
    texts = list(getattr(rollout, "texts", []) or [])
    scores = list(outputs.get("scores") or [])
    samples = []
    for i, problem in enumerate(problems[:limit]):
        samples.append(Sample(
            prompt=_prompt_string(getattr(problem, "prompt", "")),
            completion=texts[i] if i < len(texts) else "",
            score=to_float(scores[i]) if i < len(scores) else None,
            gold=getattr(problem, "answer", None) if isinstance(getattr(problem, "answer", None), str) else None,
        ))
    return samples


def _prompt_string(prompt: Any) -> str:
    if isinstance(prompt, list):  # chat messages
        return "\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in prompt if isinstance(m, dict))
    return str(prompt)


def clip_text(text: str, limit: int, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    return "..." + text[-limit:] if keep_end else text[:limit] + "..."


def fenced(text: str) -> str:
    """A Markdown code block that no backtick run inside ``text`` can close early."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def plot_series(path: str, title: str, points: list[tuple[int, float]], xlabel: str = "training step") -> None:
    """One PNG line plot: the raw values and (when noisy and long enough) a moving average."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    marker = "o" if len(points) <= 20 else None
    if len(points) >= 10:
        ax.plot(xs, ys, color="tab:blue", alpha=0.3, linewidth=1, label="per step")
        window = max(len(points) // 10, 2)
        ax.plot(xs, moving_average(ys, window), color="tab:blue", linewidth=2, label=f"moving average ({window})")
        ax.legend(loc="best", fontsize=8)
    else:
        ax.plot(xs, ys, color="tab:blue", linewidth=2, marker=marker)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def samples_markdown(heading: str, samples: list[Sample]) -> list[str]:
    lines = [f"### {heading}", ""]
    for i, s in enumerate(samples, 1):
        score = "n/a" if s.score is None else f"{s.score:g}"
        lines += [f"**{i}.** score {score}", "", "Prompt (end):", fenced(clip_text(s.prompt, PROMPT_CHARS, keep_end=True)),
                  "Completion:", fenced(clip_text(s.completion, COMPLETION_CHARS) or "(empty)")]
        if s.gold is not None:
            lines += ["Gold:", fenced(clip_text(s.gold, COMPLETION_CHARS))]
        lines.append("")
    return lines


class TrainingReport(L.Callback):
    """Plots and samples of a run, written as ``report.md`` next to the logs.

    Args:
        dirpath: output directory (default: ``trainer.log_dir``, i.e. the logger's version dir,
            or ``default_root_dir`` without a logger).
        metrics: metric key -> plot title (default :data:`DEFAULT_METRICS` plus every reward
            source the run logs, ``rewards/<name>/mean``); keys never logged are skipped.
        num_samples: completions kept per sample set (first and last training step, first and
            last validation, test).
        title: the report's heading.
    """

    def __init__(self, dirpath: str | None = None, metrics: dict[str, str] | None = None, num_samples: int = 4,
                 title: str = "Training report") -> None:
        if num_samples < 0:
            raise ValueError(f"TrainingReport num_samples must be >= 0, got {num_samples}")
        self.dirpath, self.num_samples, self.title = dirpath, num_samples, title
        self.metrics = dict(DEFAULT_METRICS if metrics is None else metrics)
        self.every_source = metrics is None  # the default set grows by every reward source the run logs
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.samples: dict[str, list[Sample]] = {}
        self.eval_items: list[dict] = []
        self.test_metrics: dict[str, float] = {}
        self.steps = 0
        self._val_batch_seen = False
        self.written: list[str] = []

    # ------------------------------------------------------------------ collection
    def _record(self, trainer: L.Trainer, keys: list[str]) -> None:
        logged = trainer.callback_metrics
        for key in keys:
            value = to_float(logged[key]) if key in logged else None
            if value is not None:
                self.history.setdefault(key, []).append((self.steps, value))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        if self.every_source:
            for key in trainer.callback_metrics:
                match = REWARD_SOURCE.fullmatch(key)
                if match and key not in self.metrics:
                    self.metrics[key] = f"reward {match.group(1)} (mean)"
        self._record(trainer, [k for k in self.metrics if not k.startswith(("val/", "test/"))])
        picked = samples_from_outputs(outputs, self.num_samples)
        if picked:
            self.samples.setdefault("train_first", picked)
            self.samples["train_last"] = picked

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_batch_seen = False

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking or self._val_batch_seen:
            return
        picked = samples_from_outputs(outputs, self.num_samples)
        if picked:
            self._val_batch_seen = True
            self.samples.setdefault("val_first", picked)
            self.samples["val_last"] = picked

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, [k for k in self.metrics if k.startswith("val/")])

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.eval_items = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        everything = samples_from_outputs(outputs, len(outputs.get("problems", [])) if isinstance(outputs, dict) else 0)
        problems = list(outputs["problems"]) if everything else []
        for sample, problem in zip(everything, problems):
            metadata = getattr(problem, "metadata", None) or {}
            self.eval_items.append({**asdict(sample), "task": metadata.get("task")})
        if everything and "test" not in self.samples:
            self.samples["test"] = everything[: self.num_samples]

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.test_metrics = {k: v for k, v in ((k, to_float(v)) for k, v in trainer.callback_metrics.items())
                             if k.startswith("test/") and v is not None}

    def on_fit_end(self, trainer, pl_module) -> None:
        self.write(self.output_dir(trainer))

    def on_test_end(self, trainer, pl_module) -> None:
        self.samples.setdefault("test", [])
        self.write(self.output_dir(trainer))

    def output_dir(self, trainer: L.Trainer) -> str:
        return self.dirpath or trainer.log_dir or trainer.default_root_dir

    # ------------------------------------------------------------------ writing
    @rank_zero_only
    def write(self, directory: str) -> list[str]:
        """Write plots, history, eval items and ``report.md``; returns the paths written."""
        os.makedirs(directory, exist_ok=True)
        written = []
        plots = []
        for key, title in self.metrics.items():
            points = self.history.get(key)
            if not points:
                continue
            name = file_stem(key) + ".png"
            plot_series(os.path.join(directory, name), title, points)
            plots.append((key, title, name))
            written.append(os.path.join(directory, name))
        with open(os.path.join(directory, "history.json"), "w", encoding="utf-8") as handle:
            json.dump({k: v for k, v in self.history.items()}, handle)
        written.append(os.path.join(directory, "history.json"))
        if self.eval_items:
            path = os.path.join(directory, "eval_items.jsonl")
            with open(path, "w", encoding="utf-8") as handle:
                for item in self.eval_items:
                    handle.write(json.dumps(item) + "\n")
            written.append(path)
        path = os.path.join(directory, "report.md")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(self.markdown(plots)) + "\n")
        written.append(path)
        self.written = written
        return written

    def markdown(self, plots: list[tuple[str, str, str]]) -> list[str]:
        lines = [f"# {self.title}", "", f"Training steps: {self.steps}", ""]
        if plots:
            lines += ["| metric | first | last | min | max |", "|---|---|---|---|---|"]
            for key, _, _ in plots:
                ys = [v for _, v in self.history[key]]
                lines.append(f"| {key} | {ys[0]:.4g} | {ys[-1]:.4g} | {min(ys):.4g} | {max(ys):.4g} |")
            lines.append("")
        if self.test_metrics:
            lines += ["| test metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in sorted(self.test_metrics.items())]
            lines.append("")
        if plots:
            lines += ["## Curves", ""]
            for key, title, name in plots:
                lines += [f"![{title}]({name})", ""]
        headings = {"train_first": "Training samples, first step", "train_last": "Training samples, last step",
                    "val_first": "Validation samples (greedy), first validation",
                    "val_last": "Validation samples (greedy), last validation", "test": "Test samples (greedy)"}
        shown = [(headings[k], self.samples[k]) for k in headings if self.samples.get(k)]
        if shown:
            lines += ["## Samples", ""]
            for heading, samples in shown:
                lines += samples_markdown(heading, samples)
        return lines
