"""CustomDataModule: the user's own data from every format, held-out rows, resume, one-line errors."""

import json

import pytest

from datamodules import CustomDataModule, MathDataModule
from datamodules.custom import RowProblem

ROWS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i), "topic": "add" if i % 2 else "even"} for i in range(20)]


def write(tmp_path, fmt, rows=ROWS):
    import datasets

    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    elif fmt == "parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif fmt == "saved":
        path = tmp_path / "saved"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "saved"])
def test_every_format_gives_the_same_problems(tmp_path, fmt):
    dm = CustomDataModule(path=write(tmp_path, fmt), checker="numeric", batch_size=2)
    problems = [dm.train_dataset()[i] for i in range(len(ROWS))]
    assert sorted(p.prompt for p in problems) == sorted(r["question"] for r in ROWS)  # guessed prompt column
    for p in problems:
        row = ROWS[p.metadata["row"]]
        assert p.prompt == row["question"] and p.gold == row["answer"]
        assert str(p.columns["topic"]) == row["topic"] and "question" not in p.columns  # other columns reach rewards
        assert p.score(f"<answer>{row['answer']}</answer>") == 1.0 and p.score("<answer>-1</answer>") == 0.0


def test_held_out_fraction_is_seeded_disjoint_and_complete(tmp_path):
    path = write(tmp_path, "jsonl")
    dm = CustomDataModule(path=path, val_fraction=0.25, seed=3)
    train = {dm.train_dataset()[i].metadata["row"] for i in range(len(dm.train_dataset()))}
    val = {dm.val_dataset()[i].metadata["row"] for i in range(len(dm.val_dataset()))}
    assert len(val) == 5 and len(train) == 15 and not train & val and train | val == set(range(20))
    again = CustomDataModule(path=path, val_fraction=0.25, seed=3)
    assert val == {again.val_dataset()[i].metadata["row"] for i in range(5)}
    other = CustomDataModule(path=path, val_fraction=0.25, seed=4)
    assert val != {other.val_dataset()[i].metadata["row"] for i in range(5)}
    assert dm.test_dataset()[0].prompt == dm.val_dataset()[0].prompt  # test defaults to the held-out rows


def test_given_validation_file_and_system_prompt_and_chat_rows(tmp_path):
    chat = [{"prompt": [{"role": "user", "content": f"Say {w}"}], "solution": w} for w in ("a", "b", "c", "d")]
    train = write(tmp_path, "jsonl", chat)
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"prompt": "Say z", "solution": "z"}) + "\n")
    dm = CustomDataModule(path=train, val_path=str(val), system_prompt="Be brief.", checker="exact")
    p = dm.train_dataset()[0]
    assert p.prompt[0] == {"role": "system", "content": "Be brief."} and p.prompt[1]["role"] == "user"
    assert len(dm.train_dataset()) == 4 and p.columns == {"solution": p.gold}
    v = dm.val_dataset()[0]
    assert v.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say z"}]
    assert v.score("<answer>z</answer>") == 1.0


def test_train_loader_resumes_on_the_same_problems(tmp_path):
    """State after 3 batches, loaded into a fresh DataModule's loader: the same 4th.. batches."""
    path = write(tmp_path, "jsonl")
    first = CustomDataModule(path=path, batch_size=3).train_dataloader()
    first.sampler.set_epoch(0)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    rest = [[p.prompt for p in b] for b in it]
    resumed = CustomDataModule(path=path, batch_size=3).train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(0)
    assert [[p.prompt for p in b] for b in resumed] == rest and len(rest) == 20 // 3 - 3


def test_no_gold_means_rewards_score(tmp_path):
    dm = CustomDataModule(path=write(tmp_path, "jsonl"), answer_column="none")
    p = dm.train_dataset()[0]
    assert isinstance(p, RowProblem) and p.gold is None and p.score("<answer>0</answer>") == 0.0


def test_non_utf8_byte_is_one_line_with_file_and_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "ok", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: byte 0xe9 at column 16 is not UTF-8: re-save the file as UTF-8"):
        CustomDataModule(path=str(path))
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"prompt,answer\nok,1\ncaf\xe9,2\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: byte 0xe9 at column 4 is not UTF-8"):
        CustomDataModule(path=str(csv))
    with pytest.raises(ValueError, match=r"bad.jsonl:2: byte 0xe9 at column 16 is not UTF-8"):
        MathDataModule(source="gsm8k", path=str(path)).setup()


def test_wrong_column_and_bad_prompt_type_name_the_fix(tmp_path):
    path = write(tmp_path, "jsonl")
    with pytest.raises(ValueError, match=r"no prompt column 'questoin': did you mean 'question'\? set data.prompt_column"):
        CustomDataModule(path=path, prompt_column="questoin")
    with pytest.raises(ValueError, match="no answer column 'gold'.*'none' when your reward functions"):
        CustomDataModule(path=path, answer_column="gold")
    bad = write(tmp_path, "jsonl", [{"prompt": "fine", "answer": "1"}, {"prompt": 7, "answer": "2"}])
    with pytest.raises(ValueError, match=r"data.jsonl: row 1: column 'prompt' holds int 7, which cannot be a prompt"):
        CustomDataModule(path=bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CustomDataModule(path=str(tmp_path / "missing.jsonl"))


def test_math_data_module_given_a_path_trains_on_the_file(tmp_path):
    path = write(tmp_path, "jsonl")
    dm = MathDataModule(path=path)  # source left at its default: the file, never synthetic arithmetic
    dm.setup()
    assert {dm.train_dataset()[i].gold for i in range(20)} == {r["answer"] for r in ROWS}


def test_a_hub_id_goes_to_datasets_with_its_split(monkeypatch):
    """Online, a hub id is read by datasets.load_dataset(id, split=...); offline it is one line."""
    import datasets

    calls = []

    def fake_load(name, *args, split=None, **kwargs):
        calls.append((name, split))
        if name != "org/task":
            raise ConnectionError("offline")
        return datasets.Dataset.from_list(ROWS[:4])
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dm = CustomDataModule(path="org/task", split="train", val_split="test")
    assert calls == [("org/task", "train"), ("org/task", "test")] and len(dm.train_dataset()) == 4
    with pytest.raises(ValueError, match=r"data.path='org/other': could not load hub dataset split 'train' \(offline\?\)"):
        CustomDataModule(path="org/other")


def test_a_malformed_json_line_is_one_line_with_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: malformed JSON row .*: fix or delete that line"):
        CustomDataModule(path=str(path))
