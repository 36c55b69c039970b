"""TrainingReport: pure helpers by hand, and a real GRPO fit + test whose report has valid PNGs,
a report.md that links each of them, the logged history, samples and per-item eval results."""

import json

import lightning as L
import pytest
import torch

from callbacks.training_report import (
    TrainingReport,
    fenced,
    file_stem,
    moving_average,
    samples_from_outputs,
)
from datamodules.toy import ToyDataModule, make_toy_problem
from lit_reason.modules import GRPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_moving_average_by_hand():
    assert moving_average([1, 2, 3, 4, 5], 2) == [1.0, 1.5, 2.5, 3.5, 4.5]
    assert moving_average([4, 0, 2], 5) == [4.0, 2.0, 2.0]
    assert moving_average([], 3) == []


def test_file_stem_and_fence():
    assert file_stem("completions/mean_length") == "completions_mean_length"
    assert file_stem("rewards/self_certainty/mean") == "rewards_self_certainty_mean"
    assert file_stem("///") == "metric"
    text = "a ```` b"
    block = fenced(text)
    assert block.startswith("`````\n") and block.endswith("\n`````")  # longer than any run inside


def test_samples_from_garbage_outputs_are_empty():
    assert samples_from_outputs(None, 3) == []
    assert samples_from_outputs(torch.tensor(1.0), 3) == []
    assert samples_from_outputs({"loss": 1.0}, 3) == []
    problem = make_toy_problem("add", 0, 0)
    picked = samples_from_outputs({"problems": [problem, problem]}, 1)  # no rollout: empty completion
    assert len(picked) == 1 and picked[0].completion == "" and picked[0].score is None
    assert picked[0].gold == problem.answer


def _png_ok(path):
    import matplotlib.image as mpimg

    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_report_of_a_real_fit_and_test(tmp_path):
    L.seed_everything(0)
    steps = 4
    report = TrainingReport(dirpath=str(tmp_path), num_samples=2, title="toy run")
    model = GRPO(model="tiny", num_generations=4, max_new_tokens=6, lr=1e-3, beta=0.01, prompt_format="plain")
    data = ToyDataModule(task="add", batch_size=2, val_size=6, val_batch_size=3)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[report],
                        val_check_interval=2, num_sanity_val_steps=0)
    trainer.fit(model, data)

    assert report.steps == steps
    for key in ("reward", "accuracy", "kl", "completions/mean_length"):
        assert [s for s, _ in report.history[key]] == list(range(1, steps + 1)), key
    assert [s for s, _ in report.history["val/accuracy"]] == [2, 4]
    assert "rewards/self_certainty/mean" not in report.history  # GRPO logs none

    md = (tmp_path / "report.md").read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(["reward.png", "accuracy.png", "kl.png", "completions_mean_length.png", "val_accuracy.png",
                           "rewards_correct_mean.png", "loss.png"])
    for name in pngs:
        _png_ok(tmp_path / name)
        assert f"]({name})" in md
    assert "Training samples, first step" in md and "Training samples, last step" in md
    assert report.samples["train_last"][0].completion in md
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["reward"][0][1] == pytest.approx(report.history["reward"][0][1])

    trainer.test(model, data, verbose=False)
    lines = (tmp_path / "eval_items.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines]
    val_problems = [make_toy_problem("add", 0 + 1_000_003, i) for i in range(6)]
    assert [i["prompt"] for i in items] == [p.prompt for p in val_problems]
    for item, problem in zip(items, val_problems):
        assert item["score"] == problem.score(item["completion"])  # the stored score is the verifier's
    accuracy = sum(i["score"] >= 1.0 for i in items) / len(items)
    assert report.test_metrics["test/accuracy"] == pytest.approx(accuracy)
    assert "| test/accuracy |" in (tmp_path / "report.md").read_text()


def test_negative_num_samples_is_an_error():
    with pytest.raises(ValueError, match="num_samples"):
        TrainingReport(num_samples=-1)
