"""Enigmata: 36 seeded puzzle tasks in 7 categories with rule-checking verifiers."""

from datamodules.enigmata import arithmetic, crypto, graph, grid, logic, search, sequential  # noqa: F401  (register tasks)
from datamodules.enigmata.base import DIFFICULTIES, NO_SOLUTION, TASKS, Puzzle, Task, register

CATEGORY_NAMES = ("Crypto", "Arithmetic", "Logic", "Grid", "Graph", "Search", "Sequential")
#: category -> task names, in registration order.
CATEGORIES: dict[str, list[str]] = {c: [n for n, t in TASKS.items() if t.category == c] for c in CATEGORY_NAMES}

from datamodules.enigmata.datamodule import EnigmataDataModule  # noqa: E402  (needs the registry filled)

__all__ = ["EnigmataDataModule", "TASKS", "CATEGORIES", "CATEGORY_NAMES", "DIFFICULTIES", "NO_SOLUTION", "Puzzle", "Task", "register"]
