"""MathDataModule over fixture files in every supported layout, the synthetic corpus, prompts,
configs, and the one-line errors for bad input."""

from __future__ import annotations

import importlib
import json
import re
import time
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from torch.utils.data import DistributedSampler

from datamodules.math_data import VAL_OFFSET, MathDataModule
from datamodules.math_problems import MathProblem
from datamodules.math_prompts import SYSTEM_PROMPTS, build_prompt
from datamodules.math_synthetic import synthetic_item
from lit_reason.tasks.answer import ANSWER_INSTRUCTION

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- fixtures

GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
    {"question": "A box holds 12 eggs. How many eggs in 100 boxes?", "answer": "12 * 100 = 1200\n#### 1,200"},
    {"question": "Half of 10?", "answer": "10 / 2 = 5\n#### 5"},
]
MATH_ROWS = [
    {"problem": "Compute $1/2 + 1/4$.", "solution": "We get $\\boxed{\\frac{3}{4}}$.", "level": "Level 1", "type": "Prealgebra"},
    {"problem": "Solve $x^2=4$, $x>0$.", "solution": "So $x = \\boxed{2}$.", "level": "Level 2", "type": "Algebra"},
    {"problem": "Interval of $x$ with $1<x\\le 2$?", "solution": "It is $\\boxed{(1,2]}$.", "level": "Level 5", "type": "Intermediate Algebra"},
    {"problem": "Count the ways.", "solution": "There are $\\boxed{\\dbinom{5}{2}}=10$... so $\\boxed{10}$.", "level": "Level 3", "type": "Counting & Probability"},
    {"problem": "Unknown level.", "solution": "$\\boxed{4}$", "level": "Level ?", "type": "Geometry"},
]
MATH500_ROWS = [
    {"problem": "What is $\\sqrt{8}$?", "solution": "... $\\boxed{2\\sqrt{2}}$", "answer": "2\\sqrt{2}", "subject": "Algebra", "level": 2, "unique_id": "a/1.json"},
    {"problem": "What is 10% of 50?", "solution": "... $\\boxed{5}$", "answer": "5", "subject": "Prealgebra", "level": 1, "unique_id": "p/2.json"},
    {"problem": "Find the interval.", "solution": "... $\\boxed{[2,\\infty)}$", "answer": "[2,\\infty)", "subject": "Intermediate Algebra", "level": 4, "unique_id": "i/3.json"},
]
AIME_ROWS = [
    {"id": 60, "problem": "Find the remainder when ... is divided by 1000.", "answer": 204},
    {"id": 61, "problem": "Find $m+n$.", "answer": "33"},
]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_parquet(path: Path, rows: list[dict]) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def all_problems(dataset) -> list[MathProblem]:
    return [dataset[i] for i in range(len(dataset))]


# ----------------------------------------------------------------------------- layouts


def test_gsm8k_jsonl_layout(tmp_path):
    dm = MathDataModule(source="gsm8k", path=write_jsonl(tmp_path / "train.jsonl", GSM8K_ROWS), val_size=1, seed=3)
    dm.setup("fit")
    train, val = all_problems(dm.train_dataset()), all_problems(dm.val_dataset())
    assert len(train) == 2 and len(val) == 1
    problems = {p.metadata["row"]: p for p in train + val}
    assert sorted(problems) == [0, 1, 2]  # holdout is disjoint from training
    assert [problems[i].gold for i in range(3)] == ["7", "1200", "5"]  # '#### 1,200' -> 1200
    assert problems[1].score("12 * 100 = 1200\n#### 1200") == 1.0  # GSM8K-style marker accepted
    assert problems[1].score("<answer>1,200</answer>") == 1.0
    assert problems[0].score("<answer>8</answer>") == 0.0
    assert all(p.score(p.answer) == 1.0 for p in problems.values())
    assert problems[0].prompt == f"{GSM8K_ROWS[0]['question']}\n\n{ANSWER_INSTRUCTION}"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("source", ["math", "math_lighteval"])
def test_math_layouts_with_level_and_subject(tmp_path, fmt, source):
    writer = write_jsonl if fmt == "jsonl" else write_parquet
    path = writer(tmp_path / f"math.{fmt}", MATH_ROWS)
    dm = MathDataModule(source=source, path=path, val_size=0)
    dm.setup()
    problems = {p.metadata["row"]: p for p in all_problems(dm.train_dataset())}
    assert len(problems) == 5
    assert problems[0].gold == "\\frac{3}{4}" and problems[0].metadata["level"] == 1
    assert problems[0].metadata["subject"] == "Prealgebra"
    assert problems[3].gold == "10"  # several boxes in the solution: the last one
    assert "level" not in problems[4].metadata  # "Level ?" has no level
    assert problems[0].score("<answer>0.75</answer>") == 1.0
    assert problems[2].score("so \\boxed{(1, 2]}") == 1.0 and problems[2].score("\\boxed{[1,2]}") == 0.0
    assert all(p.score(p.answer) == 1.0 for p in problems.values())
    assert dm.val_dataset() is None  # a local file without val_path or val_size has no validation


def test_math_level_and_subject_filters(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    dm = MathDataModule(source="math", path=path, levels=[1, 2, 3])
    dm.setup()
    assert sorted(p.metadata["level"] for p in all_problems(dm.train_dataset())) == [1, 2, 3]
    dm = MathDataModule(source="math", path=path, subjects=["counting_and_probability", "intermediate algebra"])
    dm.setup()
    assert sorted(p.metadata["subject"] for p in all_problems(dm.train_dataset())) == ["Counting & Probability", "Intermediate Algebra"]
    dm = MathDataModule(source="math", path=path, levels=[4], subjects=["Algebra"])
    with pytest.raises(ValueError, match=r"no rows left .*available levels \[1, 2, 3, 5\]"):
        dm.setup()


def test_math500_parquet_layout_as_validation(tmp_path):
    train = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    val = write_parquet(tmp_path / "math500.parquet", MATH500_ROWS)
    dm = MathDataModule(source="math", path=train, val_source="math500", val_path=val, prompt_format="chat", system_prompt="intuitor")
    dm.setup()
    val_problems = {p.metadata["row"]: p for p in all_problems(dm.val_dataset())}
    assert [val_problems[i].gold for i in range(3)] == ["2\\sqrt{2}", "5", "[2,\\infty)"]
    assert val_problems[0].metadata["level"] == 2 and val_problems[0].metadata["source"] == "math500"
    assert val_problems[0].score("<answer>\\sqrt{8}</answer>") == 1.0
    assert val_problems[2].score("\\boxed{[2, \\infty)}") == 1.0
    assert val_problems[0].prompt == [
        {"role": "system", "content": SYSTEM_PROMPTS["intuitor"]},
        {"role": "user", "content": MATH500_ROWS[0]["problem"]},
    ]
    assert len(dm.test_dataset()) == 3  # test defaults to the validation set
    assert set(dm.metric_groups()) == {"level/1", "level/2", "level/4", "subject/Algebra", "subject/Intermediate Algebra", "subject/Prealgebra"}


def test_aime_layout_with_integer_answers(tmp_path):
    dm = MathDataModule(source="aime", path=write_jsonl(tmp_path / "aime.jsonl", AIME_ROWS), system_prompt="nthr")
    dm.setup()
    problems = sorted(all_problems(dm.train_dataset()), key=lambda p: p.metadata["row"])
    assert [p.gold for p in problems] == ["204", "33"]
    assert problems[0].score("\\boxed{204}") == 1.0 and problems[0].score("\\boxed{240}") == 0.0
    assert problems[0].prompt.endswith(SYSTEM_PROMPTS["nthr"])


def test_column_mapping_for_other_layouts(tmp_path):
    rows = [{"prompt_text": "What is 2+2?", "final": "4"}, {"prompt_text": "What is 3*3?", "final": "9"}]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    dm = MathDataModule(source="me/my-set", path=path, columns={"question": "prompt_text", "answer": "final"})
    dm.setup()
    assert sorted(p.gold for p in all_problems(dm.train_dataset())) == ["4", "9"]
    guessed = write_jsonl(tmp_path / "guess.jsonl", [{"problem": "p", "answer": "1/2"}])
    dm = MathDataModule(source="me/other", path=guessed)  # question/answer column names guessed
    dm.setup()
    assert dm.train_dataset()[0].gold == "1/2"


# ----------------------------------------------------------------------------- bad input


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.path .*does not exist: point it at a local .jsonl or .parquet"):
        MathDataModule(source="gsm8k", path=str(tmp_path / "nope.jsonl"))


def test_malformed_row_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GSM8K_ROWS[0]) + "\n\n{\"question\": \"x\", \"answer\": \n", encoding="utf-8")
    dm = MathDataModule(source="gsm8k", path=str(path))
    with pytest.raises(ValueError) as info:
        dm.setup()
    message = str(info.value)
    assert f"{path}:3: malformed JSON row" in message and "\n" not in message
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a JSON object"):
        MathDataModule(source="gsm8k", path=str(path)).setup()


def test_missing_columns_name_them_and_the_mapping_option(tmp_path):
    path = write_jsonl(tmp_path / "wrong.jsonl", [{"q": "1+1", "a": "2"}])
    with pytest.raises(ValueError) as info:
        MathDataModule(source="gsm8k", path=path).setup()
    message = str(info.value)
    assert "no question column 'question'" in message and "['a', 'q']" in message and "data.columns" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match=r"maps answer -> 'final' but the rows have no such column"):
        MathDataModule(source="gsm8k", path=path, columns={"question": "q", "answer": "final"}).setup()
    with pytest.raises(ValueError, match=r"unknown role"):
        MathDataModule(source="gsm8k", path=path, columns={"prompt": "q"}).setup()


def test_hub_offline_fails_fast_with_one_line(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    dm = MathDataModule(source="lit-reason-tests/no-such-dataset")
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        dm.setup()
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert message.startswith("could not load 'lit-reason-tests/no-such-dataset' split 'train' from the hub (offline?): pass data.path=")
    assert "\n" not in message


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "gsm9k"}, "unknown data.source 'gsm9k'"),
        ({"prompt_format": "jinja"}, "unknown data.prompt_format"),
        ({"system_prompt": "r1"}, "unknown data.system_prompt 'r1'"),
        ({"difficulty": "insane"}, "unknown data.difficulty"),
    ],
)
def test_bad_options_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MathDataModule(**kwargs)


# ----------------------------------------------------------------------------- order, ranks


def test_seeded_order_is_reproducible_and_seed_dependent(tmp_path):
    rows = [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(40)]
    path = write_jsonl(tmp_path / "g.jsonl", rows)

    def order(seed):
        dm = MathDataModule(source="gsm8k", path=path, seed=seed, max_train=10)
        dm.setup()
        return [p.metadata["row"] for p in all_problems(dm.train_dataset())]

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert len(set(order(0))) == 10


def test_two_ranks_see_the_same_items_and_disjoint_shards():
    rank_modules = [MathDataModule(source="synthetic", num_train=20, batch_size=2) for _ in range(2)]
    datasets = [dm.train_dataset() for dm in rank_modules]
    assert [datasets[0][i].prompt for i in range(20)] == [datasets[1][i].prompt for i in range(20)]
    shards = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=7)) for r, ds in enumerate(datasets)]
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(20))


def test_dataloader_yields_lists_of_problems():
    dm = MathDataModule(source="synthetic", num_train=16, num_val=5, batch_size=4, val_batch_size=3)
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 4 and all(isinstance(p, MathProblem) for p in batch)
    assert [len(b) for b in dm.val_dataloader()] == [3, 2]


# ----------------------------------------------------------------------------- synthetic


def _check_synthetic_answer(question: str, gold: str) -> None:
    """Recompute the answer from the question text (independent of the generator's code)."""
    value = Fraction(gold)
    ints = [int(x) for x in re.findall(r"-?\d+", question)]
    if m := re.fullmatch(r"What is (-?\d+(?:/\d+)?) ([-+*]) (-?\d+(?:/\d+)?)\?", question):
        p, op, q = Fraction(m.group(1)), m.group(2), Fraction(m.group(3))
        assert value == {"+": p + q, "-": p - q, "*": p * q}[op]
    elif m := re.fullmatch(r"What is (\d+) \* (\d+) \+ (\d+)\?", question):
        assert value == int(m.group(1)) * int(m.group(2)) + int(m.group(3))
    elif m := re.fullmatch(r"What is (\d+) \+ (\d+) \* (\d+) - (\d+)\?", question):
        assert value == int(m.group(1)) + int(m.group(2)) * int(m.group(3)) - int(m.group(4))
    elif m := re.fullmatch(r"Solve for x: (-?\d+)x ([-+]) (\d+) = (-?\d+)\.", question):
        a, b, c = int(m.group(1)), int(m.group(3)) * (1 if m.group(2) == "+" else -1), int(m.group(4))
        assert a * value + b == c
    elif m := re.fullmatch(r"Solve for x: (-?\d+)x \+ (-?\d+) = (-?\d+)x \+ (-?\d+)\.", question):
        a, b, c, d = map(int, m.groups())
        assert a * value + b == c * value + d
    elif "buys" in question:
        have, packs, per = ints
        assert value == have + packs * per
    elif "shares the rest" in question:
        total, eaten, friends = ints
        assert value == Fraction(total - eaten, friends)
    else:
        raise AssertionError(f"unrecognised synthetic question {question!r}")


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard", "mixed"])
def test_synthetic_answers_are_exact(difficulty):
    kinds = set()
    for i in range(150):
        question, gold, meta = synthetic_item(5, i, difficulty)
        _check_synthetic_answer(question, gold)
        kinds.add(meta["kind"])
        if difficulty != "mixed":
            assert meta["difficulty"] == difficulty
    assert len(kinds) >= 2


def test_synthetic_is_seeded_and_scores_its_own_answer():
    assert synthetic_item(3, 17, "hard") == synthetic_item(3, 17, "hard")
    assert [synthetic_item(3, i)[0] for i in range(10)] != [synthetic_item(4, i)[0] for i in range(10)]
    question, gold, _ = synthetic_item(0, 0, "easy")
    assert re.fullmatch(r"What is \d+ [-+] \d+\?", question) and len(question) <= 16
    dm = MathDataModule(source="synthetic", difficulty="mixed", num_train=30, num_val=10, seed=2)
    train, val = all_problems(dm.train_dataset()), all_problems(dm.val_dataset())
    assert all(p.score(p.answer) == 1.0 for p in train + val)
    assert {p.metadata["index"] for p in val} == set(range(VAL_OFFSET, VAL_OFFSET + 10))
    wrong = str(Fraction(train[0].gold) + 1)
    assert train[0].score(f"<answer>{wrong}</answer>") == 0.0


def test_prompt_formats_and_named_system_prompts():
    assert build_prompt("What is 1 + 1?", SYSTEM_PROMPTS["default"], "plain") == f"What is 1 + 1?\n\n{ANSWER_INSTRUCTION}"
    assert build_prompt("Q", "", "plain") == "Q"
    assert build_prompt("Q", "S", "chat") == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert build_prompt("Q", "", "chat") == [{"role": "user", "content": "Q"}]
    assert "\\boxed{}" in SYSTEM_PROMPTS["nthr"] and "\\boxed" in SYSTEM_PROMPTS["intuitor"]
    dm = MathDataModule(source="synthetic", num_train=2, system_prompt_text="Answer briefly.")
    assert dm.train_dataset()[0].prompt.endswith("\n\nAnswer briefly.")


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "math").glob("*.yaml")), ids=lambda p: p.name)
def test_configs_build_the_datamodule(config):
    data = yaml.safe_load(config.read_text())["data"]
    module_name, class_name = data["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    dm = cls(**data["init_args"])  # no hub access at construction
    assert isinstance(dm, MathDataModule)
    if dm.source == "synthetic":
        problem = dm.train_dataset()[0]
        assert problem.score(problem.answer) == 1.0


def test_problems_and_datasets_pickle_after_scoring(tmp_path):
    """DataLoader workers (spawn) pickle datasets; problems carry a cached parsed gold."""
    import pickle

    dm = MathDataModule(source="math", path=write_jsonl(tmp_path / "m.jsonl", MATH_ROWS))
    dm.setup()
    problem = dm.train_dataset()[0]
    assert problem.score(problem.answer) == 1.0  # fills the parsed-gold cache
    clone = pickle.loads(pickle.dumps(problem))
    assert clone.score(clone.answer) == 1.0 and clone.gold == problem.gold
    dataset = pickle.loads(pickle.dumps(dm.train_dataset()))
    assert [dataset[i].gold for i in range(len(dataset))] == [dm.train_dataset()[i].gold for i in range(5)]
