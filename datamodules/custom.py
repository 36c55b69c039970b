"""CustomDataModule: your own data, from any file ``datasets`` reads, scored by a checker you pick
and by your own reward functions.

    data:
      class_path: CustomDataModule
      init_args:
        path: my_task.jsonl          # .jsonl .json .csv .parquet, a save_to_disk directory, a hub id
        prompt_column: prompt        # plain text, or chat messages [{role, content}, ...]
        answer_column: answer        # the gold answer (optional: rewards may do all the scoring)
        checker: normalized          # exact | normalized | numeric | choice | regex | math
        val_fraction: 0.1            # or val_path / val_split

Every column other than the prompt reaches batched (TRL-style) reward functions as a keyword
argument, one value per completion (``problem.columns``). Rows are read once (Arrow, memory
mapped) and item ``i`` is built from row ``order[i]`` with ``order`` a seeded permutation, so every
rank and every resumed run sees the same items; the loaders are ``ProblemDataModule``'s
(resumable mid-epoch). Bad data (a non-UTF-8 byte, a missing column, a prompt that is not text or
messages) is one line naming the file, the row and the fix, before anything loads a model.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from datamodules.answer_checkers import Checker, resolve_checker
from datamodules.base import ProblemDataModule, ProblemDataset
from datamodules.math_data import _one_line, read_jsonl
from datamodules.math_problems import extract_model_answer
from lit_reason.tasks.answer import MAX_COMPLETION_CHARS, format_answer
from lit_reason.tasks.problem import safe_score

FILE_BUILDERS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
PROMPT_GUESSES = ("prompt", "messages", "question", "problem", "query", "input")
ANSWER_GUESSES = ("answer", "solution", "gold", "target", "label", "output")
ANSWER_FROM = ("tag", "whole")


# --------------------------------------------------------------------------- the problem
@dataclass
class RowProblem:
    """One row of your data: a prompt, the gold answer, the checker and the row's other columns.

    ``score`` extracts the model's answer (``answer_from``: ``tag``: the last ``<answer>`` block,
    else the last ``\\boxed{}``; ``whole``: the whole completion) and checks it against ``gold``;
    0 when there is no gold or no checker (your reward functions then do the scoring)."""

    prompt: Any
    gold: str | None = None
    checker: Checker | None = field(default=None, repr=False)
    answer_from: str = "tag"
    columns: dict = field(default_factory=dict, repr=False)
    metadata: dict = field(default_factory=dict)

    @property
    def answer(self) -> str:
        """A complete correct completion (empty without a gold answer)."""
        if self.gold is None:
            return ""
        return self.gold if self.answer_from == "whole" else format_answer(self.gold)

    def extract(self, completion: str) -> str | None:
        if self.answer_from == "whole":
            return completion.strip() if isinstance(completion, str) and len(completion) <= MAX_COMPLETION_CHARS else None
        return extract_model_answer(completion)

    def score(self, completion: str) -> float:
        return safe_score(self._score, completion)

    def _score(self, completion: str) -> float:
        if self.gold is None or self.checker is None:
            return 0.0
        answer = self.extract(completion)
        return 0.0 if answer is None else self.checker(answer, self.gold)


# --------------------------------------------------------------------------- reading
def _first_bad_utf8(path: str) -> str | None:
    """``path:line`` and the byte of the first non-UTF-8 line, or None."""
    with open(path, "rb") as handle:
        for lineno, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return (f"{path}:{lineno}: byte 0x{line[err.start]:02x} at column {err.start + 1} is not UTF-8: "
                        "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in > out)")
    return None


def _explain_file_error(path: str, err: Exception) -> str:
    """One line for a file ``datasets`` could not read: the bad byte or JSON line when we can find it."""
    if path.lower().endswith((".jsonl", ".ndjson", ".json", ".csv")):
        bad = _first_bad_utf8(path)
        if bad:
            return bad
    if path.lower().endswith((".jsonl", ".ndjson")):
        try:
            read_jsonl(path)  # names the malformed line
        except ValueError as line_error:
            return str(line_error)
    cause = err.__cause__ or err
    return f"{path}: could not be read as {FILE_BUILDERS.get(os.path.splitext(path)[1].lower(), '?')} ({type(cause).__name__}: {_one_line(cause, 120)}): fix the file or convert it to .jsonl"


def load_table(path: str, split: str | None, where: str) -> Any:
    """A ``datasets.Dataset`` from a file, a ``save_to_disk`` directory or a hub id (one-line errors)."""
    import datasets

    datasets.disable_progress_bars()
    if os.path.isdir(path):
        try:
            table = datasets.load_from_disk(path)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{where}={path!r}: not a dataset saved with save_to_disk ({_one_line(err, 100)}): "
                             "point it at such a directory or at a .jsonl/.csv/.parquet file") from None
        if isinstance(table, datasets.DatasetDict):
            if split not in table:
                raise ValueError(f"{where}={path!r} has splits {sorted(table)}, not {split!r}: set the split option to one of them")
            table = table[split]
        return table
    ext = os.path.splitext(path)[1].lower()
    if os.path.isfile(path):
        if ext not in FILE_BUILDERS:
            raise ValueError(f"{where}={path!r}: unsupported file type {ext or '(none)'}: use one of {sorted(FILE_BUILDERS)}")
        if FILE_BUILDERS[ext] != "parquet":  # pyarrow's JSON reader lets bad bytes through to the first row read
            bad = _first_bad_utf8(path)
            if bad:
                raise ValueError(bad)
        try:
            return datasets.load_dataset(FILE_BUILDERS[ext], data_files=path, split="train")
        except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
            raise ValueError(_explain_file_error(path, err)) from None
    if ext in FILE_BUILDERS or path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise FileNotFoundError(f"{where}={path!r} does not exist: give a local .jsonl/.json/.csv/.parquet file, "
                                "a save_to_disk directory or a hub dataset id (org/name)")
    try:
        return datasets.load_dataset(path, split=split or "train")
    except Exception as err:  # noqa: BLE001 - offline, unknown id, unknown split
        raise ValueError(f"{where}={path!r}: could not load hub dataset split {split!r} (offline?): download it and "
                         f"give the local file [{type(err).__name__}: {_one_line(err, 100)}]") from None


def _guess(available: list[str], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in available), None)


def _is_messages(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value))


def check_prompts(values: list, where: str, column: str) -> None:
    """Every prompt is non-empty text or chat messages; the first that is not is one line."""
    for row, value in enumerate(values):
        if isinstance(value, str) and value.strip():
            continue
        if _is_messages(value):
            continue
        got = "an empty string" if isinstance(value, str) else f"{type(value).__name__} {_one_line(repr(value), 60)}"
        raise ValueError(f"{where}: row {row}: column {column!r} holds {got}, which cannot be a prompt: each prompt must be "
                         "non-empty text or chat messages [{role, content}, ...]: fix the row or set data.prompt_column")


# --------------------------------------------------------------------------- the DataModule
class CustomDataModule(ProblemDataModule):
    """Your own data (see the module doc and docs/your_own_task.md).

    Args:
        path: training data: ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet``, a ``save_to_disk``
            directory, or a hub dataset id (when online).
        split: split of a hub id or of a saved ``DatasetDict`` (default ``train``).
        val_path, val_split: held-out data given as a file / directory / hub id, or a split of
            ``path``; else ``val_fraction`` of the training rows (seeded) is held out.
        test_path, test_split: data of ``lit-reason test`` (default: the validation data).
        prompt_column: the prompt (plain text or chat messages); default: the first of
            ``prompt, messages, question, problem, query, input`` present.
        answer_column: the gold answer; default: the first of ``answer, solution, gold, target,
            label, output`` present; ``none``: no gold (your reward functions score).
        checker: ``exact`` | ``normalized`` | ``numeric`` | ``choice`` | ``regex`` | ``math``
            (datamodules.answer_checkers); ``tolerance`` for ``numeric``.
        answer_from: ``tag`` (the last ``<answer>`` block, else ``\\boxed{}``) | ``whole`` (the
            whole completion is the answer).
        system_prompt: added as a system message (text prompts become [system, user] messages);
            ``None`` keeps the prompts as they are.
        val_fraction: share of the training rows held out when no validation data is given.
        max_train, max_val: keep at most this many items; seed: the order and the held-out rows.
    """

    def __init__(self, path: str, split: str = "train", val_path: str | None = None, val_split: str | None = None,
                 test_path: str | None = None, test_split: str | None = None, prompt_column: str | None = None,
                 answer_column: str | None = None, checker: str = "normalized", tolerance: float = 1e-6,
                 answer_from: str = "tag", system_prompt: str | None = None, val_fraction: float = 0.0,
                 max_train: int | None = None, max_val: int | None = None, seed: int = 0, batch_size: int = 8,
                 val_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__(batch_size, val_batch_size, num_workers)
        self.save_hyperparameters()
        if answer_from not in ANSWER_FROM:
            raise ValueError(f"data.answer_from={answer_from!r}: choose 'tag' (<answer> block or \\boxed{{}}) or 'whole'")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction} must be in [0, 1)")
        self.checker = resolve_checker(checker, tolerance)
        self.path, self.split, self.val_path, self.val_split = path, split, val_path, val_split
        self.test_path, self.test_split = test_path, test_split
        self.prompt_column, self.answer_column = prompt_column, answer_column
        self.answer_from, self.system_prompt, self.val_fraction = answer_from, system_prompt, val_fraction
        self.max_train, self.max_val, self.seed = max_train, max_val, int(seed)
        self._splits: dict[str, tuple[Any, list[int], str, str | None]] | None = None
        self.setup()  # bad data is one line now, before a model loads

    # ------------------------------------------------------------------ loading
    def _columns(self, table: Any, where: str) -> tuple[str, str | None]:
        available = list(table.column_names)
        prompt = self.prompt_column or _guess(available, PROMPT_GUESSES)
        if prompt not in available:
            from difflib import get_close_matches

            close = get_close_matches(str(prompt), available, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{where}: no prompt column {prompt!r}: {hint}set data.prompt_column to one of {available}")
        answer = self.answer_column
        if answer == "none":
            return prompt, None
        if answer is None:
            return prompt, _guess([c for c in available if c != prompt], ANSWER_GUESSES)
        if answer not in available:
            raise ValueError(f"{where}: no answer column {answer!r}: set data.answer_column to one of {available} "
                             "(or 'none' when your reward functions do the scoring)")
        return prompt, answer

    def _read(self, path: str, split: str | None, where: str) -> tuple[Any, str, str | None]:
        table = load_table(path, split, where)
        if len(table) == 0:
            raise ValueError(f"{where}={path!r}: no rows: check the file")
        prompt, answer = self._columns(table, f"{where}={path!r}")
        check_prompts(table[prompt], path, prompt)
        return table, prompt, answer

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        train, prompt, answer = self._read(self.path, self.split, "data.path")
        order = list(range(len(train)))
        random.Random(f"custom/{self.seed}/order").shuffle(order)
        splits = {}
        if self.val_path or self.val_split:
            val, v_prompt, v_answer = self._read(self.val_path or self.path, self.val_split or self.split, "data.val_path")
            splits["val"] = (val, list(range(len(val))), v_prompt, v_answer)
        elif self.val_fraction > 0:
            held = max(1, round(self.val_fraction * len(order)))
            if held >= len(order):
                raise ValueError(f"data.val_fraction={self.val_fraction} leaves no training rows (only {len(order)}): lower it")
            splits["val"] = (train, sorted(order[:held]), prompt, answer)
            order = order[held:]
        splits["train"] = (train, order[: self.max_train] if self.max_train else order, prompt, answer)
        if "val" in splits and self.max_val:
            table, rows, p, a = splits["val"]
            splits["val"] = (table, rows[: self.max_val], p, a)
        if self.test_path or self.test_split:
            test, t_prompt, t_answer = self._read(self.test_path or self.path, self.test_split or self.split, "data.test_path")
            splits["test"] = (test, list(range(len(test))), t_prompt, t_answer)
        elif "val" in splits:
            splits["test"] = splits["val"]
        self._splits = splits

    # ------------------------------------------------------------------ problems
    def _prompt(self, value: Any) -> Any:
        if self.system_prompt is None:
            return value
        messages = value if isinstance(value, list) else [{"role": "user", "content": value}]
        if messages and messages[0].get("role") == "system":
            return messages
        return [{"role": "system", "content": self.system_prompt}, *messages]

    def make_problem(self, slot: str, index: int) -> RowProblem:
        table, rows, prompt, answer = self._splits[slot]
        row = table[rows[index]]
        gold = row.get(answer) if answer else None
        return RowProblem(prompt=self._prompt(row[prompt]), gold=None if gold is None else str(gold).strip(),
                          checker=self.checker, answer_from=self.answer_from,
                          columns={k: v for k, v in row.items() if k != prompt},
                          metadata={"split": slot, "index": index, "row": rows[index]})

    def _dataset(self, slot: str) -> ProblemDataset | None:
        if slot not in self._splits or not self._splits[slot][1]:
            return None
        return ProblemDataset(partial(self.make_problem, slot), len(self._splits[slot][1]))

    def train_dataset(self) -> ProblemDataset:
        return self._dataset("train")

    def val_dataset(self) -> ProblemDataset | None:
        return self._dataset("val")

    def test_dataset(self) -> ProblemDataset | None:
        return self._dataset("test")

