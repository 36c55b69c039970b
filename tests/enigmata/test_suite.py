"""Suite-wide checks run on EVERY registered Enigmata task x difficulty (the registry, not a list):
gold answers score 1, hostile completions score 0 fast without raising, items are identical in a
separate process, prompts do not repeat, test knobs work, generation is fast. The category test
files check each task's rules in depth (50 items, corruptions, hand-built instances).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lit_reason.tasks.answer import format_answer

from datamodules.enigmata import CATEGORIES, DIFFICULTIES, NO_SOLUTION, TASKS
from lit_reason.tasks.answer import extract_answer

ROOT = Path(__file__).resolve().parents[2]
CASES = [(name, level) for name in TASKS for level in DIFFICULTIES]
CASE_IDS = [f"{name}-{level}" for name, level in CASES]
#: Items per task x difficulty for the duplicate check.
SPLIT = 200

#: The acceptance list: the 36 Enigmata tasks by category (names as in the paper's code).
EXPECTED = {
    "Crypto": {"crypto_KKA", "crypto_KPA"},
    "Arithmetic": {"game24", "countdown"},
    "Logic": {"knights_and_knaves", "FOLIO", "zebra_logic"},
    "Grid": {"binario", "campsite", "magic_square", "skyscraper", "sum_skyscraper", "star_battle", "sudoku", "sudoku2", "full_crosswords", "symbolic_hard"},
    "Graph": {"hamiltonian_cycle", "hamiltonian_path", "natural_language_navigation", "maze"},
    "Search": {"hitori", "kakurasu", "minesweeper", "light_up", "slant", "checkmate_in_one", "tic_tac_toe"},
    "Sequential": {"twiddle", "car_painting", "stack_permutation", "big_bench_symbolic", "eight_puzzle", "fifteen_puzzle", "nine_puzzle", "sixteen_puzzle"},
}

#: (task, difficulty) whose instance space is too small for SPLIT distinct prompts, and why.
#: These are only required to be non-degenerate (>= 10 distinct prompts).
SMALL_SPACE = {
    ("game24", "easy"): "unsolvable items come from the few multisets with no solution",
    ("game24", "medium"): "unsolvable items come from the few multisets with no solution",
    ("game24", "hard"): "unsolvable items come from the few multisets with no solution",
    ("knights_and_knaves", "easy"): "2-3 people with mostly simple statements",
    ("magic_square", "easy"): "the 3x3 magic squares over 1..9 are 8; 3 givens",
    ("magic_square", "medium"): "the 3x3 magic squares over 1..9 are 8; 2 givens",
    ("skyscraper", "easy"): "3x3 / 4x4 latin squares (12 / 576) with all clues shown",
    ("sum_skyscraper", "easy"): "3x3 / 4x4 latin squares (12 / 576) with all clues shown",
    ("tic_tac_toe", "easy"): "tic-tac-toe has 5478 legal positions; 1-4 plies reach a few hundred",
    ("tic_tac_toe", "medium"): "tic-tac-toe has 5478 legal positions",
    ("tic_tac_toe", "hard"): "tic-tac-toe has 5478 legal positions",
    ("twiddle", "easy"): "1-2 rotations of the sorted 3x3 board",
    ("twiddle", "medium"): "3-4 rotations of the sorted 3x3 board",
    ("twiddle", "hard"): "5-6 rotations of the sorted 3x3 board",
    ("eight_puzzle", "easy"): "4-8 move scrambles of the 3x3 sliding puzzle",
    ("eight_puzzle", "medium"): "10-16 move scrambles of the 3x3 sliding puzzle (9!/2 boards in all)",
    ("fifteen_puzzle", "easy"): "6-10 move scrambles",
    ("nine_puzzle", "easy"): "2-3 row/column shifts of a 3x3 board",
    ("nine_puzzle", "medium"): "4-5 row/column shifts of a 3x3 board",
    ("sixteen_puzzle", "easy"): "2-4 row/column shifts of a 4x4 board",
    ("car_painting", "easy"): "6 cars in 2 colours: 64 sequences",
    ("car_painting", "medium"): "9 cars in 3 colours: 19683 sequences (birthday collisions at 200)",
    ("campsite", "easy"): "5x5 boards with about 5 tents",
}


def item_digest(puzzle) -> str:
    blob = json.dumps([puzzle.prompt, puzzle.answer, puzzle.metadata], sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def test_registry_has_the_36_tasks_in_7_categories():
    assert {c: set(names) for c, names in CATEGORIES.items()} == EXPECTED
    assert len(TASKS) == 36
    assert all(TASKS[n].category == c for c, names in EXPECTED.items() for n in names if n in TASKS)


@pytest.mark.parametrize("name, level", CASES, ids=CASE_IDS)
def test_gold_scores_one_and_every_corruption_zero(name, level):
    """50 items per task x difficulty: the gold completion scores 1, each task's own corruptions
    (a wrong cell, an illegal move, a number not in the puzzle, a truncated answer...) score 0."""
    task = TASKS[name]
    for seed in range(50):
        puzzle = task.generate(seed, level)
        assert puzzle.score(puzzle.answer) == 1.0, (seed, puzzle.answer[:200])
        assert (puzzle.task, puzzle.difficulty, puzzle.category) == (name, level, task.category)
        wrong = task.corruptions(puzzle, random.Random(seed))
        assert len(wrong) >= 3, f"{name}: only {len(wrong)} corruptions"
        for body in wrong:
            assert puzzle.score(format_answer(body)) == 0.0, (seed, body[:200])


def hostile_completions(gold_body: str) -> dict[str, object]:
    rng = random.Random(0)
    printable = "".join(rng.choice("abcXYZ0123456789 +-*/()<>[]{}\n\t.,;:'\"") for _ in range(300))
    junk = "".join(chr(b) for b in rng.randbytes(2048)) + "\ud800\udfff\x00"
    return {
        "empty": "",
        "garbage": printable,
        "garbage_block": f"<answer>{printable}</answer>",
        "binary": junk,
        "binary_block": f"<answer>{junk}</answer>",
        "one_mb": "x" * 1_000_000,
        "one_mb_block": "<answer>" + "7 " * 500_000 + "</answer>",
        "unclosed": f"<answer>{gold_body}",
        "unopened": f"{gold_body}</answer>",
        "reversed_tags": f"</answer>{gold_body}<answer>",
        "nested_10k": "<answer>" * 10_000 + gold_body + "</answer>" * 10_000,
        "not_a_string": None,
        "bytes": f"<answer>{gold_body}</answer>".encode(),
    }


def hostile_bodies(gold_body: str) -> dict[str, str]:
    rng = random.Random(1)
    bodies = {
        "empty": "",
        "spaces": " \n\t ",
        "garbage": "".join(rng.choice("qwerty 0123456789\n-") for _ in range(500)),
        "binary": "".join(chr(b) for b in rng.randbytes(1024)) + "\ud800",
        "one_mb_digits": "9" * 1_000_000,
        "one_mb_lines": "1 2 3 4\n" * 125_000,
        "deep_parens": "(" * 50_000 + "1" + ")" * 50_000,
    }
    if gold_body.strip().lower() != NO_SOLUTION:
        bodies["no_solution"] = NO_SOLUTION
    return bodies


@pytest.mark.parametrize("name, level", CASES, ids=CASE_IDS)
def test_hostile_text_scores_zero_fast_without_raising(name, level):
    puzzle = TASKS[name].generate(0, level)
    gold_body = extract_answer(puzzle.answer) or ""
    for label, completion in hostile_completions(gold_body).items():
        start = time.perf_counter()
        assert puzzle.score(completion) == 0.0, label
        assert time.perf_counter() - start < 1.0, f"{label} took too long"
    task = TASKS[name]
    for label, body in hostile_bodies(gold_body).items():
        start = time.perf_counter()
        try:
            verdict = task.verify(body, puzzle.metadata)
        except Exception as err:  # noqa: BLE001 - the test reports which input made verify raise
            pytest.fail(f"verify raised {type(err).__name__} on {label} body: {err}")
        assert not verdict, label
        assert time.perf_counter() - start < 1.0, f"{label} body took too long"


#: Items 0..N-1 compared across processes (all 10 at medium; fewer at the slower hard level).
CROSS_PROCESS_ITEMS = {"easy": 4, "medium": 10, "hard": 4}

_CHILD = """
import hashlib, json, sys
from datamodules.enigmata import DIFFICULTIES, TASKS
N = %r
def digest(p):
    blob = json.dumps([p.prompt, p.answer, p.metadata], sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()
out = {f"{n}/{d}": [digest(t.generate(s, d)) for s in range(N[d])] for n, t in TASKS.items() for d in DIFFICULTIES}
json.dump(out, sys.stdout)
"""


@pytest.mark.integration
def test_items_are_identical_in_a_separate_process():
    # a different hash seed in the child catches any use of hash() / set order over strings
    env = dict(os.environ, PYTHONHASHSEED="4242", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD % CROSS_PROCESS_ITEMS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    child = json.loads(proc.stdout)
    mine = {f"{n}/{d}": [item_digest(TASKS[n].generate(s, d)) for s in range(CROSS_PROCESS_ITEMS[d])] for n, d in CASES}
    differing = sorted(k for k in mine if child.get(k) != mine[k])
    assert not differing, f"items differ between processes: {differing}"


@pytest.mark.parametrize("name, level", CASES, ids=CASE_IDS)
def test_no_duplicate_prompts_within_a_split(name, level):
    prompts = [TASKS[name].generate(seed, level).prompt for seed in range(SPLIT)]
    distinct = len(set(prompts))
    if (name, level) in SMALL_SPACE:
        assert distinct >= 10, f"{name}/{level}: only {distinct} distinct prompts in {SPLIT}"
    else:
        assert distinct == SPLIT, f"{name}/{level}: {SPLIT - distinct} duplicate prompts in {SPLIT} items"


@pytest.mark.parametrize("name", list(TASKS))
def test_every_test_knob_setting_generates_and_verifies(name):
    task = TASKS[name]
    assert task.test_knobs, f"{name} declares no non-default knob settings to test"
    for knobs in task.test_knobs:
        for seed in range(8):
            puzzle = task.generate(seed, "medium", **knobs)
            assert puzzle.score(puzzle.answer) == 1.0, (knobs, seed)
            for body in task.corruptions(puzzle, random.Random(seed)):
                assert puzzle.score(format_answer(body)) == 0.0, (knobs, seed, body[:200])


@pytest.mark.parametrize("name", list(TASKS))
def test_medium_items_generate_fast(name):
    """The budget is 20 ms per medium item (benchmarks/enigmata_speed.py); 60 ms here so a busy
    CI machine does not flake."""
    task = TASKS[name]
    task.generate(10_000, "medium")  # warm caches / lazy tables
    start = time.perf_counter()
    for seed in range(10_001, 10_021):
        task.generate(seed, "medium")
    mean_ms = (time.perf_counter() - start) / 20 * 1000
    assert mean_ms < 60, f"{name}: {mean_ms:.1f} ms per medium item"


# ---- the gallery ---------------------------------------------------------------------------
def test_gallery_lists_every_task_under_its_category(capsys):
    from datamodules.enigmata.gallery import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    current, seen = None, {}
    for line in out:
        if line.endswith(":") and not line.startswith(" "):
            current = line[:-1]
        elif line.startswith("  "):
            seen[line.split()[0]] = current
    assert seen == {name: task.category for name, task in TASKS.items()}


def test_gallery_prints_prompts_and_gold_answers(capsys):
    from datamodules.enigmata.gallery import main

    name = next(iter(TASKS))
    assert main(["--task", name, "--difficulty", "hard", "-k", "2", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    for seed in (5, 6):
        puzzle = TASKS[name].generate(seed, "hard")
        assert puzzle.prompt in out and f"GOLD: {puzzle.answer}" in out
    assert TASKS[name].generate(7, "hard").prompt not in out
    category = TASKS[name].category
    assert main(["--category", category, "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert all(TASKS[n].generate(0, "medium").prompt in out for n in CATEGORIES[category])
    assert main(["--task", "no_such_task"]) == 2
    assert "--list" in capsys.readouterr().err


def test_gallery_markdown_has_one_medium_example_per_task():
    from datamodules.enigmata.gallery import markdown

    page = markdown()
    for name, task in TASKS.items():
        assert f"#### {name}\n" in page
        assert task.generate(0, "medium").prompt in page
        assert f"| {task.category} | [{name}]" in page


@pytest.mark.integration
def test_gallery_runs_as_a_module():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "datamodules.enigmata.gallery", "--task", next(iter(TASKS)), "-k", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GOLD: <answer>" in proc.stdout
