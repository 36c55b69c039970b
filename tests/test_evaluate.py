"""``lit-reason evaluate``: the versioned set, the table arithmetic, pass@k, bad input, a tiny run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lit_reason.app.benchmark import BENCHMARK_VERSION, SEED_BASE, build_benchmark, fingerprint, table
from lit_reason.app.evaluate import main, markdown_tables, run_benchmark

REPO = Path(__file__).resolve().parent.parent
TWO = ["maze", "game24"]
#: The N=1 set of every task x difficulty, as released with BENCHMARK_VERSION. A generator change
#: that moves it must also raise BENCHMARK_VERSION (old and new scores are not comparable).
RELEASED = {"enigmata-eval-v1": "524e853a8b56"}


def fake_completer(correct):
    """Answers gold when ``correct(item_prompt, sample_index)`` says so, else garbage."""
    by_prompt = {}

    def complete(prompts, k):
        texts = []
        for p in prompts:
            for j in range(k):
                texts.append(by_prompt[p].answer if correct(by_prompt[p], j) else "<answer>nonsense</answer>")
        return texts, [False] * len(texts)

    return complete, by_prompt


def test_table_arithmetic_on_a_fake_scorer():
    items = build_benchmark(2, TWO, ["easy", "medium"])  # 2 tasks x 2 difficulties x 2 items
    complete, by_prompt = fake_completer(lambda item, j: item.task == "game24" or (item.difficulty == "easy" and item.seed == SEED_BASE))
    by_prompt.update({i.prompt: i for i in items})
    results = run_benchmark(items, complete, k=1, batch_size=3)
    assert [r.item for r in results] == items  # back in the benchmark's order
    tasks = table(results, 1, "task", ["easy", "medium"])
    # game24: all 4 right; maze: 1 of its 2 easy items, none of the medium ones.
    assert (tasks["game24"]["all"].pass_1, tasks["maze"]["easy"].pass_1, tasks["maze"]["medium"].pass_1) == (1.0, 0.5, 0.0)
    assert tasks["maze"]["all"].pass_1 == 0.25 and tasks["all"]["all"].pass_1 == 5 / 8
    cats = table(results, 1, "category", ["easy", "medium"])
    assert list(cats) == ["Arithmetic", "Graph", "all"]  # category order of the suite, then the total
    assert cats["Graph"]["easy"].pass_1 == 0.5 and cats["all"]["easy"].pass_1 == 0.75 and cats["all"]["medium"].pass_1 == 0.5
    text = "\n".join(markdown_tables(results, 1, ["easy", "medium"]))
    assert "| Graph | 50.0 | 0.0 | 25.0 | 4 |" in text and "| **all** | 75.0 | 50.0 | 62.5 | 8 |" in text


def test_pass_at_k_by_hand():
    """k = 4 samples; item j of a cell gets c = j correct (c = 0 or 1 with N = 2).
    pass@4 with n = 4: 1 if c >= 1. pass@1 = c / 4. So per cell: pass@1 = (0 + 1/4) / 2 = 0.125,
    pass@4 = (0 + 1) / 2 = 0.5."""
    items = build_benchmark(2, ["maze"], ["easy"])
    complete, by_prompt = fake_completer(lambda item, j: item.seed == SEED_BASE - 1 and j == 2)
    by_prompt.update({i.prompt: i for i in items})
    results = run_benchmark(items, complete, k=4, batch_size=8)
    assert [r.c for r in results] == [0, 1]
    cell = table(results, 4, "task", ["easy"])["maze"]["easy"]
    assert (cell.pass_1, cell.pass_k) == (0.125, 0.5)
    # And a k = 2 estimate from n = 4: c = 1 gives 1 - C(3,2)/C(4,2) = 1/2; c = 2 gives 1 - 1/6.
    from lit_reason.app.benchmark import summarise

    results[0].scores, results[1].scores = [1.0, 0, 0, 0], [1.0, 1.0, 0, 0]
    assert summarise(results, 2).pass_k == pytest.approx((0.5 + 5 / 6) / 2)
    text = "\n".join(markdown_tables(run_benchmark(items, complete, 4, 8), 4, ["easy"]))
    assert "| maze | Graph | 12.5 / 50.0 | 12.5 / 50.0 |" in text


@pytest.mark.integration
def test_the_set_is_identical_across_builds_and_versioned():
    first = build_benchmark(2, TWO)
    assert build_benchmark(2, TWO) == first
    assert build_benchmark(1, TWO) == [i for i in first if i.seed == SEED_BASE]  # a smaller N is a prefix
    code = f"from lit_reason.app.benchmark import build_benchmark, fingerprint; print(fingerprint(build_benchmark(2, {TWO!r})))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert other.stdout.strip() == fingerprint(first), other.stderr[-2000:]
    assert all(i.seed <= SEED_BASE < -10_000 for i in first)  # never a train seed (>= 0) nor the DataModule's eval seeds
    assert len({(i.task, i.difficulty, i.prompt) for i in first}) == len(first) == 2 * 2 * 3
    assert BENCHMARK_VERSION in RELEASED


def test_full_set_fingerprint_matches_the_released_version():
    released = RELEASED[BENCHMARK_VERSION]
    got = fingerprint(build_benchmark(1))
    if released is None:
        pytest.skip(f"no fingerprint recorded for {BENCHMARK_VERSION} yet (got {got})")
    assert got == released, (f"the N=1 set changed ({got} != {released}): a generator changed, so raise "
                             "BENCHMARK_VERSION in lit_reason/app/benchmark.py and record the new fingerprint here")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("LIT_REASON_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "lit_reason.app.cli", "evaluate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_bad_model_path_is_one_line_from_the_console_script(tmp_path):
    done = _cli("--model", "/no/such/dir", "-n", "1", "--out", str(tmp_path / "out"), cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: could not load tokenizer '/no/such/dir'") and "model=<preset>" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, needle", [
    (["--tasks", "mazes"], "error: evaluate: unknown task(s) mazes; see `lit-reason gallery --list`"),
    (["--difficulties", "expert"], "error: evaluate: unknown difficulty expert; choose from easy, medium, hard"),
    (["-n", "0"], "error: evaluate: -n (items per task x difficulty) must be >= 1, got 0"),
    (["-k", "0"], "error: evaluate: -k must be >= 1, got 0"),
])
def test_bad_settings_are_one_line(tmp_path, capfd, args, needle):
    assert main(["--model", "tiny", *args, "--out", str(tmp_path / "out")]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(needle), err


def test_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["--model", "tiny", "--tasks", *TWO, "-n", "1", "--max-new-tokens", "4", "--out", str(out)]) == 0
    report = (out / "results.md").read_text()
    assert BENCHMARK_VERSION in report and fingerprint(build_benchmark(1, TWO)) in report
    assert "| maze | Graph |" in report and "| game24 | Arithmetic |" in report
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["completions"]) == 1 and r["scores"] == [0.0] for r in rows)  # random init: wrong
    assert (out / "evaluate.png").stat().st_size > 1000
    captured = capsys.readouterr()
    assert "| **all** | 0.0 | 0.0 | 0.0 | 0.0 | 6 |" in captured.out
    assert "evaluate: 6/6 items (100 %)" in captured.err
