"""The schema every Enigmata task follows: seeded generation, presets, rule-checking verifier.

A task is a small class with:
  * ``name``, ``category`` and ``presets`` (difficulty -> knob dict; easy / medium / hard),
  * ``build(rng, **knobs) -> (question, answer_body, metadata)``: one instance, all randomness
    from ``rng`` (a ``random.Random`` seeded from the task name, seed and difficulty, so item i of
    seed s is identical on every machine, process and rank),
  * ``verify(answer_body, metadata) -> bool``: checks the puzzle's RULES on the extracted answer
    (any valid solution passes), never raises on garbage and is bounded in time.

``generate`` assembles the prompt (question + the one answer convention) and returns a
:class:`Puzzle`, which implements the Problem protocol.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datamodules.tagged import score_tagged, tagged_prompt
from lit_reason.tasks.answer import extract_answer, format_answer

DIFFICULTIES = ("easy", "medium", "hard")
#: ``full``: the Enigmata prompt (rules, instance, answer format, answer instruction).
#: ``compact``: the task name and the bare instance, for tiny models trained on a few tasks: the
#: rules and the answer format are the same for every item of a task, so they carry nothing the
#: name does not, while costing a character-level model hundreds of positions to read past.
PROMPT_STYLES = ("full", "compact")
#: The one answer body that says "this instance has no solution" (game24, maze, puzzles, ...).
NO_SOLUTION = "no solution"


def says_no_solution(body: object) -> bool:
    """The one rule every task uses to read a "no solution" answer: case, surrounding spaces,
    repeated inner spaces and trailing ``.``/``!`` are ignored ("No solution." and "  NO SOLUTION  "
    count; "no solution exists" does not). Bounded: long bodies are rejected unread."""
    if not isinstance(body, str) or len(body) > 64:
        return False
    return " ".join(body.lower().split()).rstrip(".! ") == NO_SOLUTION


@dataclass
class Puzzle:
    """One generated puzzle: a Problem whose ``answer`` is a complete correct completion."""

    task: str
    category: str
    difficulty: str
    prompt: str
    answer: str
    metadata: dict = field(default_factory=dict)

    def score(self, completion: str) -> float:
        return score_tagged(completion, self._check)

    def _check(self, body: str) -> float:
        return 1.0 if TASKS[self.task].verify(body, self.metadata) else 0.0

    def feedback(self, completion: str) -> str:
        """What the verifier says about a wrong completion, for a retry episode's next turn
        (lit_reason.tasks.environment.Retry): a missing answer block, or the task's own reason."""
        body = extract_answer(completion)
        if body is None:
            return "No <answer></answer> block found: put your final answer inside answer tags."
        reason = TASKS[self.task].feedback(body, self.metadata)
        return reason or f"The answer {body[:60]!r} breaks the puzzle's rules."


class Task:
    """Base class of a puzzle task; subclasses set the class attributes and two methods."""

    name: ClassVar[str]
    category: ClassVar[str]
    presets: ClassVar[dict[str, dict[str, Any]]]

    def build(self, rng: random.Random, **knobs: Any) -> tuple[str, str, dict]:
        raise NotImplementedError

    def verify(self, answer: str, metadata: dict) -> bool:
        raise NotImplementedError

    def feedback(self, answer: str, metadata: dict) -> str | None:
        """Why ``answer`` is wrong, in one sentence a solver can act on; None: no more than "wrong"
        (the default). Bounded like ``verify``, never raises on garbage."""
        return None

    def corruptions(self, puzzle: "Puzzle", rng: random.Random) -> list[str]:
        """Wrong answer bodies for ``puzzle`` that ``verify`` must reject (used by the tests):
        a wrong cell, an illegal move, a number not in the puzzle, a truncated answer, ...
        The default truncates the gold body; tasks add their own rule-breaking edits."""
        body = extract_answer(puzzle.answer) or ""
        return [body[: len(body) // 2]] if len(body) > 1 else []

    def compact_question(self, metadata: dict) -> str | None:
        """The bare instance for ``prompt_style="compact"`` (a grid, numbers), or None when the task
        has no compact form (its instance cannot be read without the rule text)."""
        return None

    @property
    def has_compact_prompt(self) -> bool:
        return type(self).compact_question is not Task.compact_question

    #: Non-default knob settings the tests also run (each merged over the medium preset).
    test_knobs: ClassVar[list[dict[str, Any]]] = []

    def knobs(self, difficulty: str = "medium", **overrides: Any) -> dict[str, Any]:
        """The preset for ``difficulty`` with ``overrides`` applied (unknown knobs are an error)."""
        if difficulty not in self.presets:
            raise ValueError(f"task {self.name!r}: unknown difficulty {difficulty!r}; choose one of {sorted(self.presets)}")
        knobs = dict(self.presets[difficulty])
        unknown = set(overrides) - set(knobs)
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown knob(s) {sorted(unknown)}; valid knobs: {sorted(knobs)}")
        knobs.update(overrides)
        return knobs

    def generate(self, seed: int, difficulty: str = "medium", prompt_style: str = "full", **overrides: Any) -> Puzzle:
        """Item ``seed`` at ``difficulty``; the prompt style changes the prompt only (same instance,
        answer and verifier)."""
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt_style {prompt_style!r}; choose one of {', '.join(PROMPT_STYLES)}")
        knobs = self.knobs(difficulty, **overrides)
        rng = random.Random(f"enigmata/{self.name}/{difficulty}/{seed}")
        question, answer_body, metadata = self.build(rng, **knobs)
        metadata = {**metadata, "task": self.name, "category": self.category, "difficulty": difficulty, "seed": seed}
        if prompt_style == "compact":
            compact = self.compact_question(metadata)
            if compact is None:
                raise ValueError(f"task {self.name!r} has no compact prompt; use prompt_style full "
                                 f"(tasks with one: {', '.join(compact_tasks())})")
            prompt = f"{self.name}\n{compact.strip()}\n"
        else:
            prompt = tagged_prompt(question)
        return Puzzle(self.name, self.category, difficulty, prompt, format_answer(answer_body), metadata)


#: name -> task instance; filled by :func:`register` as the category modules are imported.
TASKS: dict[str, Task] = {}


def compact_tasks() -> list[str]:
    """Names of the registered tasks that have a compact prompt."""
    return [name for name, task in TASKS.items() if task.has_compact_prompt]


def register(cls: type[Task]) -> type[Task]:
    """Class decorator adding one instance of the task to :data:`TASKS`."""
    if cls.name in TASKS:
        raise ValueError(f"duplicate task name {cls.name!r}")
    missing = set(DIFFICULTIES) - set(cls.presets)
    if missing:
        raise ValueError(f"task {cls.name!r} lacks presets {sorted(missing)}")
    TASKS[cls.name] = cls()
    return cls
