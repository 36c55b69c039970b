"""ReasoningGymDataModule: determinism, the train / eval split, the bounded and guarded scorer,
one-line errors, the curriculum, and a 1-step fit of the Enigmata + reasoning-gym mix."""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("reasoning_gym", reason="reasoning-gym is a test dependency (pip install 'lit-reason[reasoning-gym]')")

from datamodules.reasoning_gym import guards
from datamodules.reasoning_gym import tasks as rg_tasks
from datamodules.reasoning_gym.datamodule import EVAL_INDEX_SPAN, ReasoningGymDataModule
from datamodules.reasoning_gym.worker import scorer

ROOT = Path(__file__).resolve().parents[1]
MIXED = ROOT / "configs" / "mixed" / "enigmata_reasoning_gym.yaml"
#: The reasoning-gym tasks of the mixed config (all reproducible across processes).
CONFIG_TASKS = ["basic_arithmetic", "chain_sum", "spell_backward", "propositional_logic", "maze"]


def digest(problems) -> str:
    text = json.dumps([[p.task, p.prompt, p.answer] for p in problems])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def dm(**kw) -> ReasoningGymDataModule:
    args = dict(tasks=["basic_arithmetic", "chain_sum"], difficulty=0, eval_per_task=5, train_size=100)
    args.update(kw)
    return ReasoningGymDataModule(**args)


# ---------------------------------------------------------------------------- determinism and split
def test_train_items_are_a_pure_function_of_seed_and_index():
    a, b, c = dm(seed=3).train_dataset(), dm(seed=3).train_dataset(), dm(seed=4).train_dataset()
    assert digest(a[i] for i in range(30)) == digest(b[i] for i in range(30))
    assert sum(a[i].prompt != c[i].prompt for i in range(30)) >= 25
    assert {a[i].task for i in range(30)} == {"basic_arithmetic", "chain_sum"}


@pytest.mark.integration
def test_items_are_identical_in_another_process_with_another_hash_seed():
    code = (
        "import hashlib, json\n"
        "from datamodules.reasoning_gym.datamodule import ReasoningGymDataModule\n"
        f"m = ReasoningGymDataModule(tasks={CONFIG_TASKS!r}, difficulty=1, eval_per_task=3, seed=5)\n"
        "ps = m.eval_items() + [m.train_dataset()[i] for i in range(20)]\n"
        "print(hashlib.blake2b(json.dumps([[p.task, p.prompt, p.answer] for p in ps]).encode(), digest_size=16).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    here = ReasoningGymDataModule(tasks=CONFIG_TASKS, difficulty=1, eval_per_task=3, seed=5)
    mine = digest(here.eval_items() + [here.train_dataset()[i] for i in range(20)])
    assert out.stdout.split()[-1] == mine


def test_eval_is_disjoint_from_train_even_in_a_tiny_instance_space():
    """Level 0 of basic_arithmetic (two one-digit terms) has a few hundred items, so 2000 train
    draws meet the 100 eval items often: every such draw must be re-drawn."""
    m = ReasoningGymDataModule(tasks=["basic_arithmetic"], difficulty=0, eval_per_task=100, train_size=2000)
    eval_prompts = {p.prompt for p in m.eval_items()}
    assert len(eval_prompts) == len(m.eval_items()) == 100
    assert all(p.metadata["index"] < EVAL_INDEX_SPAN for p in m.eval_items())
    train = m.train_dataset()
    items = [train[i] for i in range(len(train))]
    assert all(p.metadata["index"] >= EVAL_INDEX_SPAN for p in items)
    assert not eval_prompts & {p.prompt for p in items}
    assert m.train_stream().redraws > 0  # the collision check really fired


def test_weights_set_the_task_mix():
    m = dm(weights={"basic_arithmetic": 3.0}, train_size=2000)
    share = sum(m.train_dataset()[i].task == "basic_arithmetic" for i in range(2000)) / 2000
    assert abs(share - 0.75) < 0.04  # 3 : 1, binomial sd ~0.01


# ---------------------------------------------------------------------------- scorer
def test_gold_answers_score_one_and_wrong_answers_do_not():
    m = ReasoningGymDataModule(tasks=["basic_arithmetic", "countdown", "n_queens", "spiral_matrix", "polynomial_multiplication"],
                               eval_per_task=2)
    for p in m.eval_items():
        assert p.score(p.answer) == 1.0, p.task
        assert p.score("reasoning without tags " + p.answer.replace("<answer>", "")) == 0.0
        assert p.score("<answer>surely not this</answer>") < 1.0


HOSTILE = [
    "x" * 2_000_000,                                   # huge completion (refused before parsing)
    "(" * 5000 + "1" + ")" * 5000,                     # nested brackets
    "[" * 3000 + "]" * 3000,
    "9**9**9**9",                                      # an integer that never finishes
    "(x + 1)**999999",
    "__import__('os').system('touch {canary}')",      # code, for the scorers that evaluate answers
    "open('{canary}', 'w').write('pwned')",
    "[open('{canary}', 'w')]",
    "().__class__.__base__.__subclasses__()",
    "[[0] * 10**10]",                                  # memory
]


@pytest.mark.parametrize("task", ["puzzle24", "countdown", "polynomial_multiplication", "n_queens", "spiral_matrix", "basic_arithmetic"])
def test_scorer_is_bounded_and_runs_no_answer_as_code(task, tmp_path):
    timeout = 1.0
    (p,) = ReasoningGymDataModule(tasks=[task], eval_per_task=1, score_timeout=timeout).eval_items()
    canary = tmp_path / "canary"
    for text in HOSTILE:
        assert p.score(p.answer) == 1.0  # (re)starts the scorer process outside the timed call
        completion = f"<answer>{text.format(canary=canary) if '{canary}' in text else text}</answer>"
        start = time.perf_counter()
        value = p.score(completion)
        elapsed = time.perf_counter() - start
        assert value < 0.5, text[:40]  # 0, or the small format credit some tasks give any answer
        assert elapsed < timeout + 0.5, f"{text[:40]!r} took {elapsed:.2f} s"
    assert not canary.exists()
    assert p.score(p.answer) == 1.0


def test_an_answer_that_runs_too_long_is_killed_and_the_next_call_recovers():
    """``9**9**9**9`` is a plain formula (it passes the gate), and sympy computes it forever:
    the scorer process is killed at the time limit, the answer scores 0, the next call restarts it."""
    (p,) = ReasoningGymDataModule(tasks=["puzzle24"], eval_per_task=1, score_timeout=0.5).eval_items()
    assert p.score(p.answer) == 1.0
    before = scorer().kills
    start = time.perf_counter()
    assert p.score("<answer>9**9**9**9</answer>") == 0.0
    assert time.perf_counter() - start < 1.0
    assert scorer().kills == before + 1
    assert p.score(p.answer) == 1.0


@pytest.mark.parametrize("text, safe", [
    ("3*x**2 + 2*x - 1", True), ("(1 + 2) * 3 - 4 / 5", True), ("sin(x) + exp(2*x) + C", True), ("x^2", True),
    ("-7", True), ("__import__('os')", False), ("open('f')", False), ("x.__class__", False), ("[1, 2]", False),
    ("lambda: 0", False), ("f(x)", False), ("'text'", False), ("exec('1')", False), ("(" * 500 + "1" + ")" * 500, False),
    ("print(1)", False), ("sqrt(x, evaluate=False)", False), ("1 +", False), (None, False), ("x" * 10_000, False),
])
def test_safe_expression_gate(text, safe):
    assert guards.is_safe_expression(text) is safe


def test_literal_eval_guard_reads_literals_only():
    assert guards.literal_eval("[['a', 'b'], [1, 2]]") == [["a", "b"], [1, 2]]
    for text in ("__import__('os')", "[open('f')]", "1 + x", "9**9**9"):
        with pytest.raises((ValueError, SyntaxError, TypeError)):
            guards.literal_eval(text)
    calls = []
    parse = guards.guarded(lambda s, *a, **k: calls.append(s) or s)
    assert parse("x + 1") == "x + 1"
    with pytest.raises(ValueError):
        parse("__import__('os').getcwd()")
    assert calls == ["x + 1"]


def test_every_scorer_that_evaluates_text_is_guarded():
    """Re-read each registered task's score_answer: a new reasoning-gym version whose scorer calls
    eval / exec / parse_expr / sympify must be reviewed and listed in guards.EVAL_SCORERS."""
    evaluating = set()
    for name, (cls, _) in rg_tasks.registry().items():
        if re.search(r"\b(eval|exec|parse_expr|sympify)\(", inspect.getsource(cls.score_answer)):
            evaluating.add(name)
    assert evaluating == set(guards.EVAL_SCORERS)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, message", [
    (dict(tasks=["basic_arithmatic"]), "unknown reasoning-gym task 'basic_arithmatic'; did you mean basic_arithmetic"),
    (dict(tasks=["composite"]), "not supported: it is itself a weighted mix"),
    (dict(tasks=["gsm_symbolic"]), "not supported"),
    (dict(tasks=[]), "name at least one reasoning-gym task"),
    (dict(categories=["puzzles"]), "unknown reasoning-gym category 'puzzles'"),
    (dict(tasks=["basic_arithmetic"], config={"basic_arithmetic": {"colour": 1}}), "unknown field(s) colour for reasoning-gym task"),
    (dict(tasks=["basic_arithmetic"], config={"basic_arithmetic": {"seed": 1}}), "seed is set by the DataModule"),
    (dict(tasks=["basic_arithmetic"], config={"chain_sum": {}}), "'chain_sum' is not a selected task"),
    (dict(tasks=["basic_arithmetic"], difficulty=1, config={"basic_arithmetic": {"min_terms": 3}}), "set by the curriculum level"),
    (dict(tasks=["basic_arithmetic"], config={"basic_arithmetic": {"min_terms": 5, "max_terms": 2}}), "reasoning-gym rejected the config"),
    (dict(tasks=["basic_arithmetic"], difficulty=-1), "integer >= 0"),
    (dict(tasks=["basic_arithmetic"], difficulty="hard"), "must be a level, null or a {task | default: level} mapping"),
    (dict(tasks=["basic_arithmetic"], difficulty={"maze": 1}), "'maze' is not a selected task"),
    (dict(tasks=["basic_arithmetic"], weights={"basic_arithmetic": -1}), "must be a number >= 0"),
    (dict(tasks=["basic_arithmetic"], range_mode="widest"), "unknown mode 'widest'"),
    (dict(tasks=["basic_arithmetic"], score_timeout=0), "score_timeout"),
])
def test_bad_settings_fail_in_one_line(kwargs, message):
    with pytest.raises(ValueError) as err:
        ReasoningGymDataModule(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_cli_prints_the_one_line_error(tmp_path, capsys):
    from lit_reason.app.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", "--model=GRPO", "--data=ReasoningGymDataModule", "--data.tasks=[basic_arithmatic]",
              f"--trainer.default_root_dir={tmp_path}"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: data.tasks: unknown reasoning-gym task 'basic_arithmatic'; did you mean basic_arithmetic")


def test_missing_package_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import reasoning_gym now raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'lit-reason\[reasoning-gym\]'"):
        ReasoningGymDataModule(tasks=["basic_arithmetic"])


# ---------------------------------------------------------------------------- curriculum
def test_curriculum_levels_change_the_generated_items_and_are_checkpointed():
    """basic_arithmetic's curriculum: level L allows 2..2+L terms (inclusive range mode)."""
    m = ReasoningGymDataModule(tasks=["basic_arithmetic"], difficulty=0, eval_per_task=0, train_size=200)
    train = m.train_dataset()
    assert {train[i].entry["metadata"]["num_terms"] for i in range(100)} == {2}
    assert m.level_up() and m.level_of("basic_arithmetic") == 1
    assert {train[i].entry["metadata"]["num_terms"] for i in range(100)} == {2, 3}  # same indices, new level
    assert train[0].metadata["level"] == 1
    state = m.state_dict()
    fresh = ReasoningGymDataModule(tasks=["basic_arithmetic"], difficulty=0, eval_per_task=0)
    fresh.load_state_dict(state)
    assert fresh.level_of("basic_arithmetic") == 1
    while m.level_up():
        pass
    assert m.level_of("basic_arithmetic") == rg_tasks.max_level("basic_arithmetic") == 4


def test_difficulty_curriculum_callback_drives_prefixed_tasks():
    from types import SimpleNamespace

    from callbacks.difficulty_curriculum import DifficultyCurriculum

    m = dm(name_prefix="rg/")
    cb = DifficultyCurriculum(monitor="val/acc", per_task=True, interval="validation", threshold=0.5)
    trainer = SimpleNamespace(callback_metrics={"val/acc/task/rg/chain_sum": 0.9, "val/acc/task/rg/basic_arithmetic": 0.1},
                              datamodule=m, strategy=None, sanity_checking=False)
    cb.on_validation_end(trainer, None)
    assert m.level_of("rg/chain_sum") == 1 and m.level_of("basic_arithmetic") == 0


def test_no_difficulty_means_the_config_as_given():
    m = ReasoningGymDataModule(tasks=["basic_arithmetic"], config={"basic_arithmetic": {"min_terms": 5, "max_terms": 5}},
                               eval_per_task=0)
    assert {m.train_dataset()[i].entry["metadata"]["num_terms"] for i in range(30)} == {5}
    assert not m.level_up() and m.level_of("basic_arithmetic") is None


# ---------------------------------------------------------------------------- grouped metrics, a fit
def test_metric_groups_name_tasks_categories_and_levels():
    m = dm(name_prefix="rg/", eval_levels=[0, 2])
    groups = m.metric_groups()
    for g in ("task/rg/basic_arithmetic", "task/rg/chain_sum", "category/rg/arithmetic", "level/0", "level/2"):
        assert g in groups
    assert {p.metadata["level"] for p in m.eval_items()} == {0, 2} and len(m.eval_items()) == 2 * 2 * 5


def test_one_step_fit_of_the_mixed_config_logs_accuracy_per_task_of_both_suites(tmp_path):
    """The shipped Enigmata + reasoning-gym config, shrunk to 1 eval item per task: one train step,
    one validation, and val/acc per task and category of both sources in the CSV log."""
    from lit_reason.app.cli import main

    cfg = yaml.safe_load(MIXED.read_text())
    for source in cfg["data"]["init_args"]["sources"]:
        source["init_args"]["eval_per_task"] = 1
    cfg["model"]["init_args"]["max_new_tokens"] = 8
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(path), "--trainer.max_steps=1", "--trainer.val_check_interval=1", "--trainer.num_sanity_val_steps=0",
          "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
          "--data.init_args.val_batch_size=32", f"--trainer.default_root_dir={tmp_path}"])
    (metrics,) = tmp_path.rglob("metrics.csv")
    columns = set(next(csv.reader(metrics.open())))
    for key in ("val/acc/task/rg/basic_arithmetic", "val/acc/task/rg/maze", "val/acc/category/rg/arithmetic",
                "val/acc/task/game24", "val/acc/category/Grid", "val/acc/level/0", "val/acc/difficulty/easy", "val/accuracy"):
        assert key in columns, key


@pytest.mark.integration
def test_every_supported_task_generates_in_the_train_range_and_its_gold_scores_one():
    """All supported tasks at their default config, one item from the train index range, in a child
    capped at 6 GiB (a task that precomputes `size` items, like gsm_symbolic, fails here instead of
    exhausting the machine). Tasks without an oracle answer have an empty gold and are listed."""
    code = (
        "import resource, json\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
        "from datamodules.reasoning_gym import tasks as T\n"
        "from datamodules.reasoning_gym.datamodule import ProblemFactory, EVAL_INDEX_SPAN\n"
        "names = T.supported_tasks()\n"
        "f = ProblemFactory({n: T.category_of(n) for n in names}, {}, 'inclusive', '', 10.0)\n"
        "out = {}\n"
        "for n in names:\n"
        "    p = f.make(n, None, EVAL_INDEX_SPAN + 7)\n"
        "    out[n] = [p.score(p.answer), p.answer == '<answer></answer>']\n"
        "print('RESULT ' + json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    marker = "RESULT "  # some generators print (without a newline)
    result = json.loads(run.stdout[run.stdout.rindex(marker) + len(marker):])
    assert len(result) == len(rg_tasks.registry()) - len(rg_tasks.UNSUPPORTED) >= 100
    no_oracle = {n for n, (_, empty) in result.items() if empty}
    assert no_oracle == {"boxnet", "graph_color", "propositional_logic", "rubiks_cube", "rush_hour"}
    assert {n for n, (score, _) in result.items() if score != 1.0} == no_oracle
