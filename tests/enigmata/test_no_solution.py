"""One rule for "no solution" answers across every task that has unsolvable items."""

from __future__ import annotations

import pytest

from datamodules.enigmata import NO_SOLUTION, TASKS
from datamodules.enigmata.base import says_no_solution
from lit_reason.tasks.answer import extract_answer

#: Every task whose generator emits unsolvable items (the gold body is NO_SOLUTION).
UNSOLVABLE_TASKS = ["game24", "hamiltonian_cycle", "hamiltonian_path", "maze", "eight_puzzle", "fifteen_puzzle", "nine_puzzle", "stack_permutation"]
SAYS_NONE = ["no solution", "No solution", "No solution.", "no solution!", "  NO SOLUTION  ", "No  solution..", "no solution\n"]
SAYS_SOMETHING_ELSE = ["no solutions", "no solution exists", "solution", "not solvable", "no. solution", "", "no solution" * 10]


def _first(task: str, unsolvable: bool) -> object:
    for seed in range(200):
        puzzle = TASKS[task].generate(seed, "easy")
        if (extract_answer(puzzle.answer) == NO_SOLUTION) == unsolvable:
            return puzzle
    raise AssertionError(f"{task}: no {'un' if unsolvable else ''}solvable easy item in 200 seeds")


def test_the_rule():
    assert all(says_no_solution(v) for v in SAYS_NONE)
    assert not any(says_no_solution(v) for v in SAYS_SOMETHING_ELSE)
    assert not says_no_solution(None)


@pytest.mark.parametrize("task", UNSOLVABLE_TASKS)
def test_every_task_reads_no_solution_the_same_way(task):
    unsolvable, solvable = _first(task, True), _first(task, False)
    assert [unsolvable.score(f"<answer>{v}</answer>") for v in SAYS_NONE] == [1.0] * len(SAYS_NONE)
    assert [unsolvable.score(f"<answer>{v}</answer>") for v in SAYS_SOMETHING_ELSE] == [0.0] * len(SAYS_SOMETHING_ELSE)
    assert [solvable.score(f"<answer>{v}</answer>") for v in SAYS_NONE] == [0.0] * len(SAYS_NONE)
    assert solvable.score(solvable.answer) == 1.0


def test_the_list_of_tasks_with_unsolvable_items_is_complete():
    """A task that starts emitting unsolvable items must join the parametrised test above."""
    emitting = {name for name, task in TASKS.items() for seed in range(30)
                if extract_answer(task.generate(seed, "easy").answer) == NO_SOLUTION}
    assert emitting <= set(UNSOLVABLE_TASKS)
    assert len(emitting) >= 6  # some tasks may need more than 30 seeds to hit an unsolvable item
