"""docs/your_own_task.md, run: every command of the page (on the tiny preset, 2 steps), its YAML
blocks parsed with the example config, its Python blocks imported and called."""

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from lit_reason.app.cli import main

REPO = Path(__file__).resolve().parent.parent
PAGE = (REPO / "docs" / "your_own_task.md").read_text()
FAST = ["--model.model=tiny", "--model.max_new_tokens=8", "--model.num_generations=2", "--trainer.max_steps=2",
        "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", PAGE, re.S)


def commands():
    return [line for block in blocks("bash") for line in block.splitlines() if line.startswith("lit-reason ")]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A copy of configs/your_own, the page's files (named by their first comment line), as cwd."""
    shutil.copytree(REPO / "configs" / "your_own", tmp_path / "configs" / "your_own")
    for block in blocks("python") + blocks("yaml"):
        name = re.match(r"# (\S+\.(?:py|yaml))", block)
        if name:
            (tmp_path / name.group(1)).write_text(block)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("my_task_rewards", "my_task_callbacks", "configs.your_own.my_rewards"):
        sys.modules.pop(module, None)
    return tmp_path


def test_the_pages_python_blocks_work_as_described(workdir):
    from datamodules.custom import RowProblem
    from lit_reason.tasks.rewards import build_reward_sources, score_sources

    problems = [RowProblem(prompt=[{"role": "user", "content": "Reverse 'ab'"}], gold="ba", columns={"solution": s})
                for s in ("ba", "ba", "")]
    texts = ["<answer>ba</answer>", "x" * 40, "1"]
    scored = score_sources(build_reward_sources({"my_task_rewards:short_answer": 1.0, "my_task_rewards:no_digits": 1.0}),
                           problems, texts, [0.0] * 3)
    short = scored.per_source["my_task_rewards:short_answer"].tolist()
    assert short[:2] == [0.0, 0.0] and short[2] != short[2]  # 19 and 40 chars > 4 x 2; no solution: None
    assert scored.per_source["my_task_rewards:no_digits"].tolist() == [1.0, 1.0, 0.0]


def test_the_pages_yaml_blocks_parse_with_the_example_config(workdir, capsys):
    for block in blocks("yaml"):
        path = workdir / "block.yaml"
        path.write_text(block)
        with pytest.raises(SystemExit) as done:
            main(["fit", "--config", "configs/your_own/grpo.yaml", "--config", str(path), "--print_config"])
        assert done.value.code in (0, None)
        out = capsys.readouterr().out
        assert "class_path: callbacks.PolicyExport" in out and "my_task_callbacks.PrintReward" in out  # appended


@pytest.mark.integration
def test_every_command_of_the_page_runs(workdir, capsys):
    assert [c.split()[1] for c in commands()] == ["fit", "test", "export", "fit"]
    for command in commands():
        argv = shlex.split(command)[1:]
        if argv[0] == "export":
            with pytest.raises(SystemExit) as done:
                main(argv)
            assert done.value.code == 0
        else:
            main(argv + FAST)
    out = capsys.readouterr().out
    assert "step 1: reward" in out  # the custom callback appended by the second --config ran
    from transformers import AutoModelForCausalLM

    for exported in ("runs/your_own/policy", "runs/your_own/exported"):
        assert AutoModelForCausalLM.from_pretrained(workdir / exported) is not None
    reports = sorted(workdir.glob("runs/your_own/lightning_logs/version_*/report.md"))
    assert len(reports) == 3  # on by default: fit, test, fit
    first = reports[0].read_text()
    for source in ("correct", "configs.your_own.my_rewards:letters_in_place", "configs.your_own.my_rewards:answer_in_tags"):
        assert f"rewards/{source}/mean" in first
    assert (reports[1].parent / "eval_items.jsonl").exists()  # test wrote every held-out item


@pytest.mark.integration
def test_the_example_trains_with_a_trl_reward_taken_unchanged(workdir):
    """trl.rewards:think_format_reward, as a TRL user names it, next to the example's own rewards."""
    pytest.importorskip("trl")
    import csv

    rewards = ("{correct: 1.0, trl.rewards:think_format_reward: 0.2, "
               "configs.your_own.my_rewards:letters_in_place: 0.5}")
    main(["fit", "--config", "configs/your_own/grpo.yaml", f"--model.rewards={rewards}", "--report=false",
          "--trainer.limit_val_batches=0", *FAST])
    (metrics,) = workdir.glob("runs/your_own/lightning_logs/version_*/metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("rewards/trl.rewards:think_format_reward/mean")]
    assert len(rows) == 2  # both steps logged it
    assert all(float(r["rewards/trl.rewards:think_format_reward/failed_rows"]) == 0.0 for r in rows)
    assert not list(workdir.glob("runs/your_own/lightning_logs/version_*/report.md"))  # --report=false


def test_the_example_rewards_by_hand(workdir):
    from configs.your_own.my_rewards import answer_in_tags, letters_in_place

    chat = [[{"role": "assistant", "content": t}] for t in
            ("Sure: <answer>cisum</answer>", "It is cisux", "...", "<answer>a</answer><answer>b</answer>")]
    assert letters_in_place(chat, ["cisum", "cisum", "cisum", None]) == [1.0, 0.8, 0.0, None]  # 4 of 5 letters
    assert answer_in_tags(chat) == [1.0, 0.0, 0.0, 0.0]  # exactly one block
