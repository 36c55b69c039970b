"""Enigmata outside lit-reason: the ``datasets.Dataset`` builder and the TRL reward function,
driven through TRL's own GRPOTrainer reward code."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from datamodules.enigmata.datamodule import EnigmataDataModule
from datamodules.enigmata.hf import COLUMNS, build_dataset, build_rows, completion_text, enigmata_reward

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer", reason="TRL is a test-only dependency (pip install trl)")

TASKS = ["game24", "maze", "sudoku2"]


def reward_columns(rows):
    return {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}


def test_rows_have_the_columns_and_are_deterministic():
    ds = build_dataset(tasks=TASKS, n_per_task=4, difficulties=["easy", "hard"], seed=7)
    assert tuple(ds.column_names) == COLUMNS and len(ds) == 3 * 2 * 4
    again = build_dataset(tasks=TASKS, n_per_task=4, difficulties=["easy", "hard"], seed=7)
    assert ds.to_list() == again.to_list()
    other = build_dataset(tasks=TASKS, n_per_task=4, difficulties=["easy", "hard"], seed=8)
    assert sum(a != b for a, b in zip(ds["seed"], other["seed"])) == len(ds)
    row = ds[0]
    assert row["prompt"][0]["role"] == "user" and "<answer>" in row["prompt"][0]["content"]
    assert row["task"] == "game24" and row["category"] == "Arithmetic" and row["difficulty"] == "easy"
    assert json.loads(row["metadata"])["seed"] == row["seed"]
    text = build_dataset(tasks=["game24"], n_per_task=2, prompt_format="text", system_prompt="Think first.")
    assert isinstance(text[0]["prompt"], str) and text[0]["prompt"].startswith("Think first.\n\n")


def test_eval_split_is_the_datamodule_benchmark_and_train_stays_clear_of_it():
    evals = build_rows(tasks=TASKS, n_per_task=20, difficulties="easy", split="eval", prompt_format="text")
    ours = EnigmataDataModule(tasks=TASKS, eval_per_task=20, eval_difficulties=["easy"]).eval_items()
    assert [r["prompt"] for r in evals] == [p.prompt for p in ours]
    train = build_rows(tasks=TASKS, n_per_task=200, difficulties="easy", eval_per_task=20, prompt_format="text")
    assert all(r["seed"] >= 0 for r in train) and all(r["seed"] < 0 for r in evals)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}


@pytest.mark.parametrize("kwargs, message", [
    (dict(tasks=["game42"]), "unknown task 'game42'"),
    (dict(difficulties=["extreme"]), "unknown difficulty 'extreme'"),
    (dict(split="test"), "split must be 'train' or 'eval'"),
    (dict(prompt_format="xml"), "prompt_format"),
    (dict(knobs={"game24": {"colour": 1}}), "unknown knob"),
])
def test_bad_arguments_fail_in_one_line(kwargs, message):
    args = {"tasks": ["game24"], "n_per_task": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_rows(**args)


def test_completions_may_be_text_or_chat_messages():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "<answer>1</answer>"}]) == "<answer>1</answer>"
    assert completion_text([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]) == "y"
    assert completion_text(None) == "" and completion_text([{"role": "assistant", "content": None}]) == ""


def bare_trainer(reward_funcs):
    """A GRPOTrainer with exactly the attributes ``_calculate_rewards`` reads: TRL's own code
    collects the dataset columns into keyword arguments and calls the reward function."""
    trainer = object.__new__(trl_grpo.GRPOTrainer)
    trainer.accelerator = SimpleNamespace(device=torch.device("cpu"), is_main_process=True)
    trainer.reward_funcs = reward_funcs
    trainer.reward_processing_classes = [None] * len(reward_funcs)
    trainer.reward_func_names = [f.__name__ for f in reward_funcs]
    trainer.state = SimpleNamespace(global_step=0)
    trainer.args = SimpleNamespace(report_to=[])
    trainer._log_completion_extra = lambda *a, **k: None
    trainer._log_metric = lambda *a, **k: None
    trainer.environments = None
    trainer._metrics = {"train": {}, "eval": {}}
    trainer.model = SimpleNamespace(training=True)
    return trainer


@pytest.mark.parametrize("chat", [True, False])
def test_trl_reward_path_scores_with_our_verifiers(chat):
    rows = build_rows(tasks=TASKS, n_per_task=2, difficulties=["easy", "medium"], prompt_format="chat" if chat else "text")
    G = 3  # completions per prompt: gold, gold in another wrapping, wrong
    inputs = [r for r in rows for _ in range(G)]
    completions, expected = [], []
    for r in rows:
        gold = f"Reasoning...\n<answer>{r['answer']}</answer>"
        wrong = "<answer>certainly not the answer</answer>"
        texts = [gold, f"<answer>draft</answer> final: <answer>{r['answer']}</answer>", wrong]
        completions += [[{"role": "assistant", "content": t}] for t in texts] if chat else texts
        expected += [1.0, 1.0, 0.0]
    prompts = [x["prompt"] for x in inputs]
    rewards = bare_trainer([enigmata_reward])._calculate_rewards(inputs, prompts, completions, [[0]] * len(inputs))
    assert rewards.shape == (len(inputs), 1)
    assert rewards[:, 0].tolist() == expected


def test_a_row_whose_columns_name_another_puzzle_is_an_error_not_a_zero():
    rows = build_rows(tasks=["game24"], n_per_task=2, prompt_format="text")
    rows[0]["seed"] = rows[1]["seed"]  # columns no longer match the prompt
    with pytest.raises(ValueError, match="does not hold the puzzle its columns name"):
        bare_trainer([enigmata_reward])._calculate_rewards(rows, [r["prompt"] for r in rows], ["x", "y"], [[0], [0]])


def test_a_real_grpo_trainer_passes_our_columns_to_the_reward(tmp_path):
    """TRL's GRPOTrainer on the tiny preset, one generate-and-score call over our dataset: the
    reward function receives every column for every completion and returns our verifier's scores."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from lit_reason.models.policy import load_policy

    torch.manual_seed(0)
    policy = load_policy("tiny")
    policy.model.save_pretrained(tmp_path / "tiny")
    policy.tokenizer.save_pretrained(tmp_path / "tiny")
    dataset = build_dataset(tasks=["sudoku2"], n_per_task=2, difficulties="easy", prompt_style="compact", prompt_format="text")
    calls = []

    def reward(completions, **columns):
        calls.append(columns)
        return enigmata_reward(completions, **columns)

    G = 2
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2 * G, num_generations=G,
                      max_completion_length=6, report_to="none", use_cpu=True, gradient_checkpointing=False,
                      disable_tqdm=True, save_strategy="no")
    trainer = trl_grpo.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tmp_path / "tiny"), reward_funcs=reward, args=args,
                                   train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(tmp_path / "tiny"))
    trainer.model.train()
    inputs = [dataset[i // G] for i in range(2 * G)]
    out = trainer._generate_and_score_completions(inputs)
    (columns,) = calls
    for name in ("task", "difficulty", "seed", "knobs", "prompt_style", "answer", "metadata"):
        assert columns[name] == [x[name] for x in inputs], name
    assert out["advantages"].shape == (2 * G,)
