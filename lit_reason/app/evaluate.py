"""``lit-reason evaluate``: score any model on the versioned Enigmata benchmark.

    lit-reason evaluate --model smollm2-135m-instruct -n 2 --max-new-tokens 64
    lit-reason evaluate --model runs/quickstart/seed0/grpo_policy -n 8 -k 4 --temperature 1.0
    lit-reason evaluate --model tiny --tasks maze game24 --difficulties easy -n 1

Every task x difficulty gets N items of the fixed set (``lit_reason.app.benchmark``: version string
and fingerprint printed with the results, so two runs are comparable when both match). Each item
gets k completions from the project's rollout engine (greedy for k = 1, sampled otherwise), the
prompt rendered as training renders it (``lit_reason.tasks.prompts``). Written to ``--out``:
``results.md`` (tables per category x difficulty and per task; pass@k columns when k > 1),
``evaluate.png`` (bars per category and difficulty) and ``items.jsonl`` (every completion and score).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from lit_reason.app.benchmark import BENCHMARK_VERSION, BenchmarkItem, Cell, ItemResult, build_benchmark, fingerprint, score_item, table

#: ``complete(prompts, k) -> (texts, truncated)``: k completions per prompt, prompt-major.
Completer = Callable[[Sequence[str], int], tuple[list[str], list[bool]]]


# --------------------------------------------------------------------------- generation
@dataclass
class PolicyCompleter:
    """Completions from a loaded policy through :class:`lit_reason.rollout.RolloutEngine`."""

    model: object
    tokenizer: object
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    prompt_format: str = "auto"
    max_prompt_length: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        import torch

        from lit_reason.rollout import RolloutEngine, SamplingConfig

        sampling = SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)
        self.engine = RolloutEngine(self.model, self.tokenizer, sampling)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.model.eval()

    def __call__(self, prompts: Sequence[str], k: int) -> tuple[list[str], list[bool]]:
        import torch

        from lit_reason.tasks.prompts import encode_prompt

        rows = [encode_prompt(self.tokenizer, p, self.prompt_format, self.max_prompt_length).ids for p in prompts for _ in range(k)]
        width = max(len(r) for r in rows)
        pad = self.engine.pad_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        rollout = self.engine.generate(ids, mask, self.generator)
        return list(rollout.texts), [bool(t) for t in rollout.truncated.tolist()]


# --------------------------------------------------------------------------- the run
def run_benchmark(items: Sequence[BenchmarkItem], complete: Completer, k: int, batch_size: int = 8,
                  progress: Callable[[str], None] | None = None) -> list[ItemResult]:
    """Score every item with k completions; items go in batches of about ``batch_size`` rows,
    ordered by prompt length (less padding), and come back in the benchmark's order."""
    per_batch = max(1, batch_size // k)
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt))
    results: dict[int, ItemResult] = {}
    start, done, correct, samples = time.perf_counter(), 0, 0, 0
    next_report = 0.0
    for b in range(0, len(order), per_batch):
        batch = order[b : b + per_batch]
        texts, truncated = complete([items[i].prompt for i in batch], k)
        for j, i in enumerate(batch):
            mine = slice(j * k, (j + 1) * k)
            scores = [score_item(items[i], t) for t in texts[mine]]
            results[i] = ItemResult(items[i], scores, sum(truncated[mine]), list(texts[mine]))
            correct += sum(s >= 1.0 for s in scores)
            samples += k
        done += len(batch)
        elapsed = time.perf_counter() - start
        if progress is not None and (done == len(items) or done / len(items) >= next_report):
            left = elapsed / done * (len(items) - done)
            progress(f"evaluate: {done}/{len(items)} items ({100 * done / len(items):.0f} %), "
                     f"{100 * correct / samples:.1f} % of samples correct, {elapsed:.0f} s elapsed, ~{left:.0f} s left")
            next_report = done / len(items) + 0.1
    return [results[i] for i in range(len(items))]


# --------------------------------------------------------------------------- the report
def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}"  # NaN: an empty cell


def _cell(cell: Cell, k: int) -> str:
    if cell.items == 0:
        return "-"
    return _pct(cell.pass_1) if k == 1 else f"{_pct(cell.pass_1)} / {_pct(cell.pass_k)}"


def markdown_tables(results: Sequence[ItemResult], k: int, difficulties: Sequence[str]) -> list[str]:
    """The two tables: category x difficulty, then task x difficulty (percent; ``pass@1 / pass@k`` when k > 1)."""
    what = "pass@1 (%)" if k == 1 else f"pass@1 / pass@{k} (%)"
    categories = table(results, k, "category", difficulties)
    tasks = table(results, k, "task", difficulties)
    category_of = {r.item.task: r.item.category for r in results}
    head = " | ".join(difficulties)
    lines = [f"### Per category and difficulty: {what}", "", f"| category | {head} | all | items |",
             "|---|" + "---|" * (len(difficulties) + 2)]
    for name, row in categories.items():
        label = "**all**" if name == "all" else name
        lines.append(f"| {label} | " + " | ".join(_cell(row[d], k) for d in [*difficulties, "all"]) + f" | {row['all'].items} |")
    lines += ["", f"### Per task and difficulty: {what}", "", f"| task | category | {head} | all | cut at max_new_tokens |",
              "|---|---|" + "---|" * (len(difficulties) + 2)]
    for name, row in tasks.items():
        if name == "all":
            continue
        lines.append(f"| {name} | {category_of[name]} | " + " | ".join(_cell(row[d], k) for d in [*difficulties, "all"])
                     + f" | {_pct(row['all'].truncated)} % |")
    return lines


def bar_chart(results: Sequence[ItemResult], k: int, difficulties: Sequence[str], path: Path, title: str) -> Path:
    """Grouped bars: one group per category, one bar per difficulty (a second panel for pass@k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = {n: row for n, row in table(results, k, "category", difficulties).items() if n != "all"}
    names = list(categories)
    panels = [("pass@1", "pass_1")] + ([(f"pass@{k}", "pass_k")] if k > 1 else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 1.2 * len(names) + 2), 3.2 * len(panels)), squeeze=False)
    width = 0.8 / max(len(difficulties), 1)
    for ax, (label, attr) in zip(axes[:, 0], panels):
        for j, d in enumerate(difficulties):
            values = [100 * getattr(categories[n][d], attr) if categories[n][d].items else 0.0 for n in names]
            bars = ax.bar([i + (j - (len(difficulties) - 1) / 2) * width for i in range(len(names))], values, width, label=d)
            ax.bar_label(bars, fmt="%.0f", fontsize="x-small", padding=1)  # a 0 % bar is still read as 0
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel(f"{label} (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small", ncol=len(difficulties))
    axes[0, 0].set_title(title, fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(out: Path, results: Sequence[ItemResult], k: int, difficulties: Sequence[str], header: dict[str, str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    overall = table(results, k, "category", difficulties)["all"]["all"]
    title = f"{header.get('model', '?')} on {BENCHMARK_VERSION} (n={header.get('n', '?')}, k={k})"
    chart = bar_chart(results, k, difficulties, out / "evaluate.png", title)
    lines = [f"# Enigmata benchmark: {header.get('model', '?')}", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in header.items()]
    lines += [f"| pass@1 (all items) | {_pct(overall.pass_1)} % |"]
    if k > 1:
        lines += [f"| pass@{k} (all items) | {_pct(overall.pass_k)} % |"]
    lines += [f"| samples cut at max_new_tokens | {_pct(overall.truncated)} % |", "", f"![per category and difficulty]({chart.name})", "",
              *markdown_tables(results, k, difficulties), ""]
    path = out / "results.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    with open(out / "items.jsonl", "w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps({"task": r.item.task, "difficulty": r.item.difficulty, "seed": r.item.seed, "scores": r.scores,
                                 "completions": r.completions}) + "\n")
    return path


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lit-reason evaluate", description="Score a model on the versioned Enigmata benchmark.")
    p.add_argument("--model", required=True, help="a preset (tiny, ...), the built-in smollm2-135m-instruct, a save_pretrained directory or a hub name")
    p.add_argument("-n", type=int, default=4, help="items per task x difficulty (default 4; a smaller N is a prefix of a larger one)")
    p.add_argument("-k", type=int, default=1, help="samples per item; pass@k is reported when k > 1 (default 1)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: 0 = greedy for k = 1, 1.0 for k > 1)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--max-prompt-length", type=int, default=2048, help="longer prompts lose the start of their text (default 2048)")
    p.add_argument("--prompt-format", choices=("auto", "chat", "plain"), default="auto", help="auto: the chat template when the tokenizer has one")
    p.add_argument("--tasks", nargs="+", help="only these tasks (default: all)")
    p.add_argument("--difficulties", nargs="+", help="only these difficulties (default: easy medium hard)")
    p.add_argument("--batch-size", type=int, default=8, help="completions generated together (default 8)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (k > 1 or temperature > 0)")
    p.add_argument("--out", default="runs/evaluate", help="output directory (default runs/evaluate)")
    return p


def main(argv: list[str] | None = None) -> int:
    from lit_reason.utils.quiet import quiet_known_warnings

    quiet_known_warnings()
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ValueError as err:  # bad input (PolicyLoadError is one): one line naming the fix
        if os.environ.get("LIT_REASON_TRACEBACK"):
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from datamodules.enigmata import DIFFICULTIES
    from lit_reason.models.policy import load_policy

    if args.k < 1:
        raise ValueError(f"evaluate: -k must be >= 1, got {args.k}")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("evaluate: --batch-size and --max-new-tokens must be >= 1")
    temperature = args.temperature if args.temperature is not None else (0.0 if args.k == 1 else 1.0)
    difficulties = list(args.difficulties or DIFFICULTIES)
    items = build_benchmark(args.n, args.tasks, difficulties)  # bad names fail before the model loads
    policy = load_policy(args.model, dtype=args.dtype)  # a bad model name: PolicyLoadError, one line
    print(f"evaluate: {args.model} on {BENCHMARK_VERSION} (fingerprint {fingerprint(items)}): {len(items)} items, k={args.k}, "
          f"temperature {temperature:g}, max_new_tokens {args.max_new_tokens}", file=sys.stderr, flush=True)
    completer = PolicyCompleter(policy.model, policy.tokenizer, args.max_new_tokens, temperature, args.top_p,
                                args.prompt_format, args.max_prompt_length, args.seed)
    start = time.perf_counter()
    results = run_benchmark(items, completer, args.k, args.batch_size, progress=lambda line: print(line, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - start
    header = {"model": args.model, "benchmark": f"{BENCHMARK_VERSION}, fingerprint `{fingerprint(items)}`",
              "n": str(args.n), "items": str(len(items)), "samples per item (k)": str(args.k),
              "sampling": "greedy" if temperature == 0 else f"temperature {temperature:g}, top_p {args.top_p:g}, seed {args.seed}",
              "max_new_tokens": str(args.max_new_tokens), "prompt format": _prompt_format(policy.tokenizer, args.prompt_format),
              "wall time": f"{seconds:.0f} s (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"}
    path = write_results(Path(args.out), results, args.k, difficulties, header)
    print("\n".join(markdown_tables(results, args.k, difficulties)))
    print(f"\nwrote {path} and {path.parent / 'evaluate.png'}", file=sys.stderr)
    return 0


def _prompt_format(tokenizer, prompt_format: str) -> str:
    from lit_reason.tasks.prompts import uses_chat_template

    rendered = "chat template" if uses_chat_template(tokenizer, "", prompt_format) else "plain text"
    return rendered if prompt_format != "auto" else f"auto ({rendered})"


if __name__ == "__main__":
    sys.exit(main())
