"""The versioned Enigmata benchmark: a fixed puzzle set and the arithmetic of its tables.

Why versioned: a score is only comparable with another one when both were measured on the same
items. The set is a pure function of ``(BENCHMARK_VERSION, n_per_cell)``: every task x difficulty
gets the first ``n_per_cell`` distinct puzzles of the instance seeds ``SEED_BASE, SEED_BASE - 1,
...`` (negative, so never a training item of ``EnigmataDataModule``, whose train seeds are >= 0,
and below the range its own eval split uses). A smaller N is a prefix of a larger one. The
:func:`fingerprint` (a hash of every prompt and gold answer) is printed with each result: two
results with the same version but different fingerprints come from generators that changed, and
``BENCHMARK_VERSION`` must then be raised.

The tables are pure functions of per-item (samples, correct) counts: per item the unbiased pass@k
(``lit_reason.algorithms.pass_at_k``), then the mean over the items of a cell, a task or a category.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from lit_reason.algorithms.pass_at_k import pass_at_k

#: Raise when a generator, a verifier or the seed scheme changes what the set holds or how it scores.
BENCHMARK_VERSION = "enigmata-eval-v1"
#: First instance seed of every cell (item j uses SEED_BASE - j, duplicates skipped).
SEED_BASE = -1_000_000
#: Seeds tried per cell before giving up on distinct items: tasks with a tiny instance space.
MAX_DRAWS_PER_ITEM = 4


@dataclass(frozen=True)
class BenchmarkItem:
    task: str
    category: str
    difficulty: str
    seed: int
    prompt: str
    answer: str  # a correct completion (gold)
    metadata: dict = field(default_factory=dict, compare=False, hash=False, repr=False)  # what the verifier reads


def build_benchmark(n_per_cell: int, tasks: Sequence[str] | None = None,
                    difficulties: Sequence[str] | None = None) -> list[BenchmarkItem]:
    """The benchmark items, category-major then task then difficulty then item (full prompts)."""
    from datamodules.enigmata import CATEGORIES, DIFFICULTIES, TASKS

    if n_per_cell < 1:
        raise ValueError(f"evaluate: -n (items per task x difficulty) must be >= 1, got {n_per_cell}")
    chosen = list(TASKS) if tasks is None else list(tasks)
    unknown = [t for t in chosen if t not in TASKS]
    if unknown:
        raise ValueError(f"evaluate: unknown task(s) {', '.join(unknown)}; see `lit-reason gallery --list` for the {len(TASKS)} names")
    levels = list(DIFFICULTIES) if difficulties is None else list(difficulties)
    bad = [d for d in levels if d not in DIFFICULTIES]
    if bad:
        raise ValueError(f"evaluate: unknown difficulty {', '.join(bad)}; choose from {', '.join(DIFFICULTIES)}")
    ordered = [t for names in CATEGORIES.values() for t in names if t in chosen]
    ordered += [t for t in chosen if t not in ordered]
    items: list[BenchmarkItem] = []
    for name in ordered:
        task = TASKS[name]
        for level in levels:
            seen: set[str] = set()
            seed = SEED_BASE
            while len(seen) < n_per_cell and SEED_BASE - seed < MAX_DRAWS_PER_ITEM * n_per_cell + 16:
                puzzle = task.generate(seed, level)
                seed -= 1
                if puzzle.prompt in seen:
                    continue
                seen.add(puzzle.prompt)
                items.append(BenchmarkItem(name, task.category, level, seed + 1, puzzle.prompt, puzzle.answer, puzzle.metadata))
    return items


def fingerprint(items: Iterable[BenchmarkItem]) -> str:
    """12 hex digits of a hash of every item's task, difficulty, seed, prompt and gold answer."""
    digest = hashlib.sha256()
    for item in items:
        for part in (item.task, item.difficulty, str(item.seed), item.prompt, item.answer):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
    return digest.hexdigest()[:12]


def score_item(item: BenchmarkItem, completion: str) -> float:
    """The verifier's score of one completion (the task's rules; never raises)."""
    from datamodules.enigmata import Puzzle

    return Puzzle(item.task, item.category, item.difficulty, item.prompt, item.answer, item.metadata).score(completion)


@dataclass
class ItemResult:
    item: BenchmarkItem
    scores: list[float]  # one per sample
    truncated: int = 0  # samples that hit max_new_tokens
    completions: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def c(self) -> int:
        return sum(1 for s in self.scores if s >= 1.0)


@dataclass
class Cell:
    """Mean pass@1 and pass@k over a group of items."""

    items: int
    pass_1: float
    pass_k: float
    truncated: float  # fraction of samples cut by max_new_tokens


def summarise(results: Sequence[ItemResult], k: int) -> Cell:
    """Mean over items of the unbiased pass@1 and pass@k (every item needs >= k samples)."""
    if not results:
        return Cell(0, float("nan"), float("nan"), float("nan"))
    p1 = sum(pass_at_k(r.n, r.c, 1) for r in results) / len(results)
    pk = sum(pass_at_k(r.n, r.c, k) for r in results) / len(results)
    samples = sum(r.n for r in results)
    return Cell(len(results), p1, pk, sum(r.truncated for r in results) / max(samples, 1))


def table(results: Sequence[ItemResult], k: int, row_key: str, difficulties: Sequence[str]) -> dict[str, dict[str, Cell]]:
    """``{row: {difficulty or "all": Cell}}`` with rows by ``row_key`` (``category`` or ``task``)
    in first-seen order, plus an ``"all"`` row."""
    rows: dict[str, list[ItemResult]] = {}
    for r in results:
        rows.setdefault(getattr(r.item, row_key), []).append(r)
    rows["all"] = list(results)
    out: dict[str, dict[str, Cell]] = {}
    for name, members in rows.items():
        out[name] = {d: summarise([r for r in members if r.item.difficulty == d], k) for d in difficulties}
        out[name]["all"] = summarise(members, k)
    return out
