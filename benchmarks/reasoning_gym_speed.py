"""reasoning-gym inside lit-reason: item generation and scoring time, measured in one process.

    OMP_NUM_THREADS=1 python benchmarks/reasoning_gym_speed.py [--items 200] [--tasks a b ...]

Per task: ms to generate one item through ReasoningGymDataModule (reasoning-gym's generator plus
our prompt), ms to score one completion in the scorer process (pickle round trip + the task's
``score_answer``) against calling ``score_answer`` in this process (the unbounded reference),
their ratio, and the scorer process's start-up and kill-and-restart times.
"""

from __future__ import annotations

import argparse
import time

from datamodules.reasoning_gym import ReasoningGymDataModule
from datamodules.reasoning_gym.worker import scorer

DEFAULT_TASKS = ["basic_arithmetic", "chain_sum", "spell_backward", "propositional_logic", "maze", "countdown",
                 "puzzle24", "n_queens", "polynomial_multiplication", "sudoku", "knights_knaves", "zebra_puzzles"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--tasks", nargs="*", default=DEFAULT_TASKS)
    args = parser.parse_args()
    proc = scorer()
    start = time.perf_counter()
    proc._start()
    startup = time.perf_counter() - start
    print("| task | generate ms/item | score ms/call (scorer process) | score ms/call (in process) | ratio |")
    print("|---|---|---|---|---|")
    for task in args.tasks:
        m = ReasoningGymDataModule(tasks=[task], eval_per_task=0, train_size=args.items)
        train = m.train_dataset()
        m.train_stream()
        start = time.perf_counter()
        items = [train[i] for i in range(args.items)]
        gen = (time.perf_counter() - start) / args.items * 1e3
        dataset, _ = m.factory.dataset(task, None)
        bodies = [p.answer[len("<answer>"):-len("</answer>")] for p in items]
        start = time.perf_counter()
        for p in items:
            p.score(p.answer)
        worker = (time.perf_counter() - start) / args.items * 1e3
        start = time.perf_counter()
        for p, body in zip(items, bodies):
            dataset.score_answer(body, p.entry)
        local = (time.perf_counter() - start) / args.items * 1e3
        print(f"| {task} | {gen:.2f} | {worker:.3f} | {local:.3f} | {worker / max(local, 1e-9):.1f} |")
    (p,) = ReasoningGymDataModule(tasks=["puzzle24"], eval_per_task=1, score_timeout=0.5).eval_items()
    p.score(p.answer)
    start = time.perf_counter()
    p.score("<answer>9**9**9**9</answer>")
    killed = time.perf_counter() - start
    start = time.perf_counter()
    p.score(p.answer)
    restart = time.perf_counter() - start
    print(f"\nscorer process start-up: {startup:.2f} s; an answer past a 0.5 s limit returns after {killed:.2f} s; "
          f"the next call (restart) takes {restart:.2f} s")


if __name__ == "__main__":
    main()
