"""MathDataModule: GSM8K, MATH (incl. MATH-lighteval), MATH-500, AIME-style sets, local files
and the offline synthetic corpus, all yielding :class:`MathProblem` items.

Where the rows come from:
  * ``source: synthetic``: generated (no files, no network), see ``math_synthetic``.
  * ``path`` (and ``val_path`` / ``test_path``) given: local ``.jsonl`` / ``.json`` / ``.parquet``
    files, read with the column layout of ``source`` (a preset name or a hub name).
  * otherwise: ``datasets.load_dataset(<hub name>)``; offline that fails with one line naming
    ``data.path``.

Column roles (``columns`` overrides the preset's mapping): ``question`` (required), ``answer``
(a gold answer, or GSM8K-style text ending in ``#### N``), ``solution`` (a worked solution whose
last ``\\boxed{}`` is the gold; used when there is no answer column), ``level``, ``subject``.

Rows are loaded once per process in ``setup`` and kept in a fixed, seeded order (identical on
every rank); Lightning's DistributedSampler then shards the map-style datasets across ranks.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch.utils.data import Dataset

from datamodules.base import ProblemDataModule, ProblemDataset
from datamodules.math_problems import DEFAULT_TIME_LIMIT, MathProblem, gsm8k_gold, last_boxed
from datamodules.math_prompts import build_prompt, check_prompt_format, resolve_system_prompt
from datamodules.math_synthetic import DIFFICULTIES, synthetic_item

log = logging.getLogger(__name__)

ROLES = ("question", "answer", "solution", "level", "subject")
#: Validation items of the synthetic corpus are indices VAL_OFFSET + j (disjoint from training).
VAL_OFFSET = 1_000_000_000
_AUTO = "auto"


@dataclass(frozen=True)
class Layout:
    """A corpus preset: where it lives on the hub and which columns hold what."""

    hub: str | None
    configs: tuple[str | None, ...] = (None,)
    columns: dict[str, str] = field(default_factory=dict)
    splits: tuple[str, str | None, str | None] = ("train", "test", "test")  # train, val, test


_MATH_COLUMNS = {"question": "problem", "solution": "solution", "level": "level", "subject": "type"}
_MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra", "precalculus")

LAYOUTS: dict[str, Layout] = {
    "gsm8k": Layout("openai/gsm8k", ("main",), {"question": "question", "answer": "answer"}),
    "math": Layout("EleutherAI/hendrycks_math", _MATH_SUBJECTS, _MATH_COLUMNS),
    "math_lighteval": Layout("DigitalLearningGmbH/MATH-lighteval", ("default",), _MATH_COLUMNS),
    "math500": Layout(
        "HuggingFaceH4/MATH-500",
        columns={"question": "problem", "answer": "answer", "level": "level", "subject": "subject"},
        splits=("test", "test", "test"),
    ),
    "aime": Layout("HuggingFaceH4/aime_2024", columns={"question": "problem", "answer": "answer"}, splits=("train", "train", "train")),
    "synthetic": Layout(None, splits=("train", "validation", "validation")),
    "local": Layout(None),  # data.path given with no source: columns guessed from the file
}

_QUESTION_GUESSES = ("question", "problem", "prompt", "query", "input")
_ANSWER_GUESSES = ("answer", "final_answer", "gold", "target", "output")
_SOLUTION_GUESSES = ("solution", "rationale")


def _one_line(text: object, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- reading rows


def read_jsonl(path: str) -> list[dict]:
    """Rows of a JSON-lines file; a malformed line is one error naming file and line."""
    rows = []
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{lineno}: byte 0x{raw[err.start]:02x} at column {err.start + 1} is not UTF-8: "
                                 "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in > out)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: malformed JSON row ({err.msg}): fix or delete that line") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}: fix or delete that line")
            rows.append(row)
    return rows


def read_rows(path: str) -> list[dict]:
    """Rows of a local ``.jsonl`` / ``.json`` (a list of objects) / ``.parquet`` file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist: set data.path (and data.val_path / data.test_path) to a local .jsonl or .parquet file")
    lower = path.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return read_jsonl(path)
    if lower.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg}): fix the file or convert it to .jsonl") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path}: expected a JSON list of objects: convert it to .jsonl (one object per line)")
        return data
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as err:  # noqa: BLE001 - any pyarrow failure is a bad file
            raise ValueError(f"{path}: not a readable Parquet file ({_one_line(err, 100)}): re-export it or use .jsonl") from None
    raise ValueError(f"{path}: unsupported file type: use .jsonl, .json or .parquet")


def load_hub_rows(name: str, configs: tuple[str | None, ...], split: str) -> list[dict]:
    """Rows of ``split`` of a hub dataset (several configs are concatenated, e.g. MATH subjects)."""
    try:
        import datasets

        rows: list[dict] = []
        for config in configs:
            rows.extend(dict(r) for r in datasets.load_dataset(name, config, split=split))
        return rows
    except Exception as err:  # noqa: BLE001 - offline, unknown name, missing split ...
        raise ValueError(
            f"could not load {name!r} split {split!r} from the hub (offline?): pass data.path=<local .jsonl/.parquet> "
            f"with the same columns, or fix data.source / data.split [{type(err).__name__}: {_one_line(err, 120)}]"
        ) from None


# --------------------------------------------------------------------------- rows -> records


def _guess(columns: set[str], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in columns), None)


def resolve_columns(layout_columns: dict[str, str], overrides: dict[str, str] | None, available: set[str], where: str) -> dict[str, str]:
    """Role -> column for these rows: preset, then overrides; guessed for unknown layouts.

    Missing required columns (question, and answer or solution) or any explicitly mapped column
    that is absent are one error naming the columns present and the ``data.columns`` option.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(ROLES)
    if unknown:
        raise ValueError(f"data.columns has unknown role(s) {sorted(unknown)}: valid roles are {list(ROLES)}")
    columns = dict(layout_columns) if layout_columns else {}
    if not columns:
        guesses = {
            "question": _guess(available, _QUESTION_GUESSES),
            "answer": _guess(available, _ANSWER_GUESSES),
            "solution": _guess(available, _SOLUTION_GUESSES),
            "level": "level" if "level" in available else None,
            "subject": _guess(available, ("subject", "type")),
        }
        columns = {role: col for role, col in guesses.items() if col}
    columns.update(overrides)
    for role, col in overrides.items():
        if col not in available:
            raise ValueError(f"{where}: data.columns maps {role} -> {col!r} but the rows have no such column (columns: {sorted(available)})")
    hint = "set data.columns, e.g. {question: <col>, answer: <col>} (roles: question, answer, solution, level, subject)"
    if columns.get("question") not in available:
        raise ValueError(f"{where}: no question column {columns.get('question')!r} (columns: {sorted(available)}): {hint}")
    if columns.get("answer") not in available and columns.get("solution") not in available:
        wanted = [c for c in (columns.get("answer"), columns.get("solution")) if c]
        raise ValueError(f"{where}: no answer or solution column {wanted} (columns: {sorted(available)}): {hint}")
    return {role: col for role, col in columns.items() if col in available}


def parse_level(value: Any) -> int | None:
    """MATH's ``"Level 3"``, MATH-500's ``3``; ``"Level ?"`` and blanks are None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = re.search(r"\d+", str(value))
    return int(match.group()) if match else None


def subject_key(name: Any) -> str:
    """``"Counting & Probability"`` and ``"counting_and_probability"`` compare equal."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower().replace("&", "and"))


def extract_gold(row: dict, columns: dict[str, str]) -> tuple[str | None, bool]:
    """(gold answer, whether it came from a ``####`` marker) for one row."""
    answer = row.get(columns["answer"]) if "answer" in columns else None
    if answer is not None and str(answer).strip():
        text = str(answer)
        if "####" in text:
            return gsm8k_gold(text), True
        if "\\boxed" in text or "\\fbox" in text:
            return last_boxed(text), False
        return text.strip(), False
    solution = row.get(columns["solution"]) if "solution" in columns else None
    if isinstance(solution, str):
        if "####" in solution and "\\boxed" not in solution:
            return gsm8k_gold(solution), True
        return last_boxed(solution), False
    return None, False


def rows_to_records(rows: list[dict], columns: dict[str, str], where: str) -> list[dict]:
    """Compact records (question, gold, level, subject, hash_marker, row); rows without an
    extractable gold are skipped with one warning."""
    records, skipped = [], []
    for i, row in enumerate(rows):
        question = row.get(columns["question"])
        gold, hash_marker = extract_gold(row, columns)
        if not isinstance(question, str) or not question.strip() or not gold:
            skipped.append(i)
            continue
        records.append(
            {
                "question": question,
                "gold": gold,
                "level": parse_level(row.get(columns["level"])) if "level" in columns else None,
                "subject": str(row[columns["subject"]]) if row.get(columns.get("subject", "")) is not None else None,
                "hash_marker": hash_marker,
                "row": i,
            }
        )
    if skipped:
        log.warning("%s: skipped %d row(s) with no question or no extractable gold answer (first: row %d)", where, len(skipped), skipped[0])
    return records


def filter_records(records: list[dict], levels: list[int] | None, subjects: list[str] | None, where: str) -> list[dict]:
    """Keep MATH levels / subjects; an empty result is one error listing what is available."""
    if not levels and not subjects:
        return records
    wanted_subjects = {subject_key(s) for s in subjects or ()}
    kept = [
        r
        for r in records
        if (not levels or r["level"] in levels) and (not wanted_subjects or (r["subject"] is not None and subject_key(r["subject"]) in wanted_subjects))
    ]
    if not kept:
        have_levels = sorted({r["level"] for r in records if r["level"] is not None})
        have_subjects = sorted({r["subject"] for r in records if r["subject"] is not None})
        raise ValueError(
            f"{where}: no rows left after data.levels={levels} data.subjects={subjects}: available levels {have_levels}, subjects {have_subjects}"
        )
    return kept


# --------------------------------------------------------------------------- the DataModule


class MathDataModule(ProblemDataModule):
    """Math corpora as lists of :class:`MathProblem` (scored by equivalence with math-verify).

    Args:
        source: ``synthetic`` | ``gsm8k`` | ``math`` | ``math_lighteval`` | ``math500`` | ``aime`` |
            a hub dataset name (columns guessed or given by ``columns``).
        path: local training file (.jsonl / .json / .parquet) in the layout of ``source``;
            when set, nothing is downloaded.
        val_path, test_path: local validation / test files (same layout unless ``val_source``).
        split, val_split, test_split: hub split names; ``"auto"`` takes the preset's
            (GSM8K / MATH: train, test, test), ``None`` disables validation / test.
        val_source: a different corpus for validation and test (e.g. train ``math``, validate
            ``math500``); defaults to ``source``.
        columns: role -> column overrides (roles: question, answer, solution, level, subject).
        levels, subjects: keep only these MATH levels (1-5) / subjects (applied to every split).
        prompt_format: ``plain`` (one string) or ``chat`` (system + user messages).
        system_prompt: ``default`` (answer tags) | ``intuitor`` | ``nthr`` | ``none``;
            ``system_prompt_text`` replaces it with your own text.
        seed: fixes the order of loaded rows (and so ``max_*`` subsets / ``val_size`` holdout)
            and the synthetic items; identical on every rank.
        max_train, max_val: keep at most this many items (a seeded subset); None keeps all.
        val_size: with local files and no val_path, hold out this many training rows.
        difficulty, num_train, num_val: the synthetic corpus (easy | medium | hard | mixed).
        time_limit: extra wall-clock budget of one answer check, seconds (main thread only; the
            size screens of ``math_problems`` bound the check in every thread).
    """

    def __init__(
        self,
        source: str = "synthetic",
        path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        split: str | None = _AUTO,
        val_split: str | None = _AUTO,
        test_split: str | None = _AUTO,
        val_source: str | None = None,
        columns: dict[str, str] | None = None,
        levels: list[int] | None = None,
        subjects: list[str] | None = None,
        prompt_format: str = "plain",
        system_prompt: str = "default",
        system_prompt_text: str | None = None,
        seed: int = 0,
        max_train: int | None = None,
        max_val: int | None = None,
        val_size: int = 0,
        difficulty: str = "easy",
        num_train: int = 10_000,
        num_val: int = 256,
        time_limit: float | None = DEFAULT_TIME_LIMIT,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        if path is not None and source == "synthetic":  # a file given: train on it (columns guessed), never on synthetic
            source = "local"
        self.source, self.val_source = source, val_source or source
        self.path, self.val_path, self.test_path = path, val_path, test_path
        self.columns = dict(columns) if columns else None
        self.levels = [int(x) for x in levels] if levels else None
        self.subjects = list(subjects) if subjects else None
        self.prompt_format = check_prompt_format(prompt_format)
        self.system_text = resolve_system_prompt(system_prompt, system_prompt_text)
        self.seed, self.max_train, self.max_val, self.val_size = int(seed), max_train, max_val, int(val_size)
        self.difficulty, self.num_train, self.num_val = difficulty, int(num_train), int(num_val)
        self.time_limit = time_limit
        for name, value in (("source", self.source), ("val_source", self.val_source)):
            if not value or not isinstance(value, str):
                raise ValueError(f"data.{name} must be a preset ({sorted(LAYOUTS)}) or a hub dataset name, got {value!r}")
            if value not in LAYOUTS and "/" not in value and not (path if name == "source" else (val_path or test_path)):
                raise ValueError(f"unknown data.{name} {value!r}: use one of {sorted(LAYOUTS)}, a hub name like 'org/dataset', or set data.path to a local file")
        if self.source == "synthetic" or self.val_source == "synthetic":
            if difficulty not in DIFFICULTIES:
                raise ValueError(f"unknown data.difficulty {difficulty!r}: choose one of {list(DIFFICULTIES)}")
            if not 0 < self.num_train < VAL_OFFSET or self.num_val < 0:
                raise ValueError(f"data.num_train must be in 1..{VAL_OFFSET - 1} and data.num_val >= 0, got {num_train}, {num_val}")
        for name, p in (("path", path), ("val_path", val_path), ("test_path", test_path)):
            if p is not None and not os.path.isfile(p):
                raise FileNotFoundError(f"data.{name} {p!r} does not exist: point it at a local .jsonl or .parquet file")
        self._splits = {
            "train": self._split_name(self.source, split, 0),
            "val": self._split_name(self.val_source, val_split, 1),
            "test": self._split_name(self.val_source, test_split, 2),
        }
        self._records: dict[str, list[dict] | None] | None = None

    @staticmethod
    def _split_name(source: str, split: str | None, slot: int) -> str | None:
        if split != _AUTO:
            return split
        layout = LAYOUTS.get(source)
        return layout.splits[slot] if layout else ("train", "test", "test")[slot]

    # ------------------------------------------------------------------ loading

    def _load(self, source: str, path: str | None, split: str | None, where: str, slot: str) -> list[dict]:
        layout = LAYOUTS.get(source, Layout(source))
        if path is not None:
            rows, where = read_rows(path), path
        elif layout.hub is None:
            raise ValueError(f"{where}: source {source!r} has no hub dataset: set data.path to a local file")
        else:
            rows, where = load_hub_rows(layout.hub, layout.configs, split), f"{layout.hub}[{split}]"
        if not rows:
            raise ValueError(f"{where}: no rows: check the file / split")
        available = set().union(*(r.keys() for r in rows[:100]))
        columns = resolve_columns(layout.columns, self.columns if source == self.source else None, available, where)
        records = filter_records(rows_to_records(rows, columns, where), self.levels, self.subjects, where)
        if not records:
            raise ValueError(f"{where}: no usable rows (no question or gold answer in any row): check data.columns")
        for r in records:
            r["source"] = source
        order = list(range(len(records)))
        random.Random(f"math/{self.seed}/order/{slot}").shuffle(order)  # not the path: same on every machine
        return [records[i] for i in order]

    def _uses_hub(self) -> bool:
        train_hub = self.source != "synthetic" and self.path is None
        val_hub = self.val_source != "synthetic" and self.val_path is None and self.val_source != self.source
        return train_hub or val_hub

    def prepare_data(self) -> None:
        """Rank 0 downloads hub datasets into the local cache once (no-op for files / synthetic)."""
        if self._uses_hub():
            self.setup("fit")

    def setup(self, stage: str | None = None) -> None:
        if self._records is not None:
            return
        records: dict[str, list[dict] | None] = {"train": None, "val": None, "test": None}
        if self.source != "synthetic":
            records["train"] = self._load(self.source, self.path, self._splits["train"], "data.source", "train")
        if self.val_source != "synthetic":
            records["val"] = self._eval_records("val")
            records["test"] = self._eval_records("test", records["val"])
            if records["val"] is None and self.val_size > 0 and records["train"] is not None:
                if self.val_size >= len(records["train"]):
                    raise ValueError(f"data.val_size={self.val_size} leaves no training rows (only {len(records['train'])}): lower it")
                records["val"], records["train"] = records["train"][-self.val_size :], records["train"][: -self.val_size]
                records["test"] = records["test"] or records["val"]
        for slot, cap in (("train", self.max_train), ("val", self.max_val), ("test", self.max_val)):
            if cap is not None and records[slot] is not None:
                records[slot] = records[slot][: int(cap)]
        self._records = records

    def _eval_records(self, slot: str, val_records: list[dict] | None = None) -> list[dict] | None:
        """Validation / test records: a local file, the hub split, or (test) the validation set."""
        local = self.val_path if slot == "val" else self.test_path
        split = self._splits[slot]
        if local is not None:
            return self._load(self.val_source, local, split, f"data.{slot}_path", slot)
        if slot == "test" and val_records is not None and (self.val_path is not None or split == self._splits["val"]):
            return val_records
        if split is None or (self.val_source == self.source and self.path is not None):
            return None  # a local training file without an eval file: see data.val_size
        return self._load(self.val_source, None, split, f"data.{slot}_split", slot)

    # ------------------------------------------------------------------ problems

    def make_problem(self, record: dict, index: int) -> MathProblem:
        metadata = {"source": record["source"], "index": index, "row": record["row"]}
        metadata.update({k: record[k] for k in ("level", "subject") if record.get(k) is not None})
        return MathProblem(
            prompt=build_prompt(record["question"], self.system_text, self.prompt_format),
            gold=record["gold"],
            metadata=metadata,
            hash_marker=record["hash_marker"],
            time_limit=self.time_limit,
        )

    def record_problem(self, slot: str, index: int) -> MathProblem:
        return self.make_problem(self._records[slot][index], index)

    def synthetic_problem(self, index: int, offset: int = 0) -> MathProblem:
        """Synthetic item ``offset + index`` (validation items live at ``VAL_OFFSET + j``)."""
        question, gold, metadata = synthetic_item(self.seed, offset + index, self.difficulty)
        prompt = build_prompt(question, self.system_text, self.prompt_format)
        return MathProblem(prompt=prompt, gold=gold, metadata=metadata, time_limit=self.time_limit)

    def _dataset(self, slot: str) -> Dataset | None:
        source = self.source if slot == "train" else self.val_source
        if source == "synthetic":
            if slot == "train":
                return ProblemDataset(self.synthetic_problem, self.num_train)
            size = self.num_val if self.max_val is None else min(self.num_val, int(self.max_val))
            return ProblemDataset(partial(self.synthetic_problem, offset=VAL_OFFSET), size) if size > 0 else None
        self.setup()
        records = self._records[slot]
        if not records:
            return None
        return ProblemDataset(partial(self.record_problem, slot), len(records))

    def train_dataset(self) -> Dataset:
        return self._dataset("train")

    def val_dataset(self) -> Dataset | None:
        return self._dataset("val")

    def test_dataset(self) -> Dataset | None:
        return self._dataset("test")

    def metric_groups(self) -> list[str]:
        """Group names for ``lit_reason.tasks.metrics.GroupedAccuracy`` over the validation set."""
        if self.val_source == "synthetic":
            levels = ("easy", "medium", "hard") if self.difficulty == "mixed" else (self.difficulty,)
            return [f"difficulty/{d}" for d in levels]
        self.setup()
        records = self._records["val"] or []
        levels = sorted({r["level"] for r in records if r["level"] is not None})
        subjects = sorted({r["subject"] for r in records if r["subject"] is not None})
        return [f"level/{x}" for x in levels] + [f"subject/{s}" for s in subjects]
