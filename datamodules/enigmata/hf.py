"""Enigmata outside lit-reason: a ``datasets.Dataset`` of puzzles and a TRL-style reward function.

Any trainer that takes a Hugging Face dataset and ``reward(completions, **columns) -> list[float]``
(TRL's ``GRPOTrainer``, and the trainers that copied its interface) can train on the suite:

    from datamodules.enigmata.hf import build_dataset, enigmata_reward
    train = build_dataset(categories=["Grid"], n_per_task=200, difficulties=["easy", "medium"])
    trainer = GRPOTrainer(model=..., reward_funcs=enigmata_reward, train_dataset=train, ...)

Rows carry ``task``, ``difficulty``, ``seed`` and ``knobs``, which identify the puzzle exactly
(generation is a pure function of them), so the reward function regenerates the puzzle and runs
its rule-checking verifier: no pickled state, and ``metadata`` can stay a JSON string for reading
(Arrow needs one schema for every row, and the tasks' metadata differ). Regenerated puzzles are
cached; a row whose prompt does not contain the regenerated one (another version, other knobs) is
an error, not a silent 0.
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from typing import Any, Sequence

from datamodules.enigmata import base
from datamodules.enigmata.base import DIFFICULTIES, PROMPT_STYLES, Puzzle
from datamodules.enigmata.datamodule import build_eval_items, prompt_hash, select_tasks
from lit_reason.tasks.answer import extract_answer

#: Columns of every row (``prompt`` is text or chat messages, see ``prompt_format``).
COLUMNS = ("prompt", "answer", "task", "category", "difficulty", "seed", "knobs", "prompt_style", "metadata")
PROMPT_FORMATS = ("chat", "text")
#: Regenerated puzzles kept by the reward function.
CACHE_ITEMS = 8192
_cache: OrderedDict = OrderedDict()


def _levels(difficulties: str | Sequence[str]) -> list[str]:
    levels = [difficulties] if isinstance(difficulties, str) else list(difficulties)
    for level in levels:
        if level not in DIFFICULTIES:
            raise ValueError(f"difficulties: unknown difficulty {level!r}; choose from {', '.join(DIFFICULTIES)}")
    if not levels:
        raise ValueError("difficulties: give at least one of " + ", ".join(DIFFICULTIES))
    return levels


def _row(puzzle: Puzzle, knobs: dict, prompt_style: str, prompt_format: str, system_prompt: str | None) -> dict[str, Any]:
    if prompt_format == "chat":
        prompt = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": puzzle.prompt}]
    else:
        prompt = puzzle.prompt if not system_prompt else f"{system_prompt}\n\n{puzzle.prompt}"
    return {
        "prompt": prompt,
        "answer": extract_answer(puzzle.answer) or "",
        "task": puzzle.task,
        "category": puzzle.category,
        "difficulty": puzzle.difficulty,
        "seed": int(puzzle.metadata["seed"]),
        "knobs": json.dumps(knobs, sort_keys=True),
        "prompt_style": prompt_style,
        "metadata": json.dumps(puzzle.metadata, sort_keys=True, default=str),
    }


def build_rows(tasks: Sequence[str] | None = None, categories: Sequence[str] | None = None, n_per_task: int = 100,
               difficulties: str | Sequence[str] = "medium", seed: int = 0, split: str = "train",
               knobs: dict[str, dict] | None = None, prompt_style: str = "full", prompt_format: str = "chat",
               system_prompt: str | None = None, eval_per_task: int = 50) -> list[dict[str, Any]]:
    """The rows of :func:`build_dataset` as plain dicts (no ``datasets`` import)."""
    names = select_tasks(list(tasks) if tasks is not None else None, list(categories) if categories is not None else None, "enigmata")
    levels = _levels(difficulties)
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {prompt_style!r}")
    if n_per_task < 1:
        raise ValueError(f"n_per_task must be >= 1, got {n_per_task}")
    knobs = {k: dict(v) for k, v in (knobs or {}).items()}
    for name, overrides in knobs.items():
        if name not in names:
            raise ValueError(f"knobs: {name!r} is not a selected task; selected: {', '.join(names)}")
        for level in levels:
            base.TASKS[name].knobs(level, **overrides)  # one line on an unknown knob
    if split == "eval":  # the fixed benchmark of EnigmataDataModule (negative seeds)
        puzzles = build_eval_items(names, levels, n_per_task, knobs, prompt_style)
    else:
        held_out = {prompt_hash(p.prompt) for p in build_eval_items(names, levels, eval_per_task, knobs, prompt_style)} if eval_per_task else set()
        puzzles = []
        for name in names:
            for level in levels:
                rng = random.Random(f"enigmata-hf/{seed}/{name}/{level}")
                seen, mine, tries = set(held_out), [], 0
                while len(mine) < n_per_task and tries < 4 * n_per_task + 64:
                    tries += 1
                    puzzle = base.TASKS[name].generate(rng.getrandbits(62), level, prompt_style, **knobs.get(name, {}))
                    digest = prompt_hash(puzzle.prompt)
                    if digest not in seen:
                        seen.add(digest)
                        mine.append(puzzle)
                puzzles += mine
    return [_row(p, knobs.get(p.task, {}), prompt_style, prompt_format, system_prompt) for p in puzzles]


def build_dataset(tasks: Sequence[str] | None = None, categories: Sequence[str] | None = None, n_per_task: int = 100,
                  difficulties: str | Sequence[str] = "medium", seed: int = 0, split: str = "train",
                  knobs: dict[str, dict] | None = None, prompt_style: str = "full", prompt_format: str = "chat",
                  system_prompt: str | None = None, eval_per_task: int = 50):
    """Enigmata puzzles as a ``datasets.Dataset`` with columns :data:`COLUMNS`.

    Args:
        tasks / categories: task names, and categories whose tasks are added (both None: all 36).
        n_per_task: rows per task x difficulty (fewer for a task whose instance space runs out).
        difficulties: one level or a list (easy, medium, hard).
        seed: which train puzzles (row order: task, then difficulty, then draw).
        split: ``train`` (non-negative item seeds, minus any puzzle equal to one of the first
            ``eval_per_task`` eval items) or ``eval`` (EnigmataDataModule's fixed eval items,
            negative seeds; ``seed`` is not used).
        knobs: task -> knob overrides over every preset, as in EnigmataDataModule.
        prompt_style: ``full`` or ``compact`` (see EnigmataDataModule).
        prompt_format: ``chat`` (``[{"role": "user", "content": ...}]``, what TRL applies the chat
            template to) or ``text`` (the plain prompt string).
        system_prompt: an optional system message (chat) or preamble (text).
        eval_per_task: how many eval items per task x difficulty the train split stays clear of.
    """
    from datasets import Dataset

    return Dataset.from_list(build_rows(tasks, categories, n_per_task, difficulties, seed, split, knobs, prompt_style,
                                        prompt_format, system_prompt, eval_per_task))


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or TRL's chat form (a list of messages, whose
    assistant contents are joined). Anything else is an empty string (scores 0)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts = [m.get("content") for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def _prompt_text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(
        m.get("content", "") for m in prompt or [] if isinstance(m, dict) and isinstance(m.get("content"), str))


def regenerate(task: str, difficulty: str, seed: int, knobs: str | dict | None = None, prompt_style: str = "full") -> Puzzle:
    """The puzzle a row names (cached)."""
    knob_dict = json.loads(knobs) if isinstance(knobs, str) and knobs else dict(knobs or {})
    key = (task, difficulty, int(seed), json.dumps(knob_dict, sort_keys=True), prompt_style)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    if task not in base.TASKS:
        raise ValueError(f"enigmata_reward: unknown task {task!r} in the dataset row; valid tasks: {', '.join(base.TASKS)}")
    puzzle = base.TASKS[task].generate(int(seed), difficulty, prompt_style, **knob_dict)
    _cache[key] = puzzle
    if len(_cache) > CACHE_ITEMS:
        _cache.popitem(last=False)
    return puzzle


def enigmata_reward(completions: Sequence[Any], task: Sequence[str], difficulty: Sequence[str], seed: Sequence[int],
                    knobs: Sequence[str] | None = None, prompt_style: Sequence[str] | None = None,
                    prompts: Sequence[Any] | None = None, **_: Any) -> list[float]:
    """TRL reward function: 1.0 when a completion's last ``<answer>`` block passes the puzzle's
    verifier, else 0.0. The row columns arrive as lists (one entry per completion); completions
    may be strings or chat messages. Never raises on completion text; a row that names no valid
    puzzle, or whose prompt is not the regenerated one, raises one line."""
    n = len(completions)
    for name, column in (("task", task), ("difficulty", difficulty), ("seed", seed)):
        if column is None or len(column) != n:
            raise ValueError(f"enigmata_reward: column {name!r} must give one value per completion; "
                             "build the dataset with datamodules.enigmata.hf.build_dataset")
    rewards = []
    for i, completion in enumerate(completions):
        puzzle = regenerate(task[i], difficulty[i], seed[i], knobs[i] if knobs is not None else None,
                            prompt_style[i] if prompt_style is not None else "full")
        if prompts is not None and puzzle.prompt not in _prompt_text(prompts[i]):
            raise ValueError(f"enigmata_reward: row {i} ({task[i]}, {difficulty[i]}, seed {seed[i]}) does not hold the puzzle "
                             "its columns name; rebuild the dataset with this version of lit-reason")
        rewards.append(float(puzzle.score(completion_text(completion))))
    return rewards
