"""Two tiny generated tasks for smoke tests and learning tests of the RL machinery.

``char_fill`` gives partial credit (the share of completion characters equal to the asked one), so
even a random-init model gets a reward signal at step 0; ``add`` is single-digit addition with the
project's answer tag and an exact check. Real work uses the Enigmata and math DataModules.
"""

from __future__ import annotations

import random

from datamodules.base import ProblemDataModule, ProblemDataset
from lit_reason.tasks.answer import extract_answer, format_answer
from lit_reason.tasks.problem import TextProblem

TOY_TASKS = ("char_fill", "add")


def _char_fill(rng: random.Random, letters: str = "abcdefghij") -> TextProblem:
    char = rng.choice(letters)

    def verify(completion: str) -> float:
        text = completion[:256]
        return sum(c == char for c in text) / max(len(text), 1)

    return TextProblem(f"Write the letter {char} many times.", char * 8, verify, {"task": "char_fill"})


def _add(rng: random.Random) -> TextProblem:
    a, b = rng.randint(0, 9), rng.randint(0, 9)

    def verify(completion: str) -> float:
        body = extract_answer(completion)
        return 1.0 if body is not None and body.strip() == str(a + b) else 0.0

    return TextProblem(f"{a}+{b}=", format_answer(str(a + b)), verify, {"task": "add"})


def make_toy_problem(task: str, seed: int, index: int, letters: str = "abcdefghij") -> TextProblem:
    rng = random.Random(f"toy/{task}/{seed}/{index}")
    return _char_fill(rng, letters) if task == "char_fill" else _add(rng)


class ToyDataModule(ProblemDataModule):
    """Args:
    task: ``char_fill`` or ``add``.
    train_size / val_size: items per split (validation uses a disjoint seed).
    seed: item i of seed s is the same everywhere.
    letters: the letters ``char_fill`` asks for (one letter makes the easiest learning check).
    """

    def __init__(self, task: str = "char_fill", train_size: int = 512, val_size: int = 32, seed: int = 0,
                 batch_size: int = 4, val_batch_size: int | None = None, num_workers: int = 0,
                 letters: str = "abcdefghij") -> None:
        super().__init__(batch_size, val_batch_size, num_workers)
        if task not in TOY_TASKS:
            raise ValueError(f"data.task={task!r}: choose one of {TOY_TASKS}")
        if not letters:
            raise ValueError("data.letters must name at least one letter")
        self.task, self.train_size, self.val_size, self.seed, self.letters = task, train_size, val_size, seed, letters

    def train_dataset(self) -> ProblemDataset:
        return ProblemDataset(lambda i: make_toy_problem(self.task, self.seed, i, self.letters), self.train_size)

    def val_dataset(self) -> ProblemDataset | None:
        if not self.val_size:
            return None
        return ProblemDataset(lambda i: make_toy_problem(self.task, self.seed + 1_000_003, i, self.letters), self.val_size)
