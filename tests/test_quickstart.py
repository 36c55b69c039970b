"""Quickstart: the statistics by hand, the configs agree with each other, and a shortened run of
the real driver (same configs and code path, fewer steps) whose RL reward rises and whose report
files exist with valid PNGs."""

import json
import math
from pathlib import Path

import pytest
import yaml

from lit_reason.app import quickstart as qs

CONFIGS = Path(qs.CONFIG_DIR)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SFT_STEPS, RL_STEPS = 1000, 40  # the shortened run: same configs and code path, fewer steps


def test_paired_gain_ci_by_hand():
    gain, low, high = qs.paired_gain_ci([0, 0, 1, 1], [1, 0, 1, 1])
    # differences 1, 0, 0, 0: mean 0.25, sample sd 0.5, half width 1.96 * 0.5 / 2
    assert gain == pytest.approx(0.25)
    assert high - gain == pytest.approx(qs.Z_975 * 0.5 / 2)
    assert gain - low == pytest.approx(high - gain)
    assert qs.paired_gain_ci([1, 0], [1, 0]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equally long"):
        qs.paired_gain_ci([1], [1, 0])


def test_seed_mean_ci_by_hand():
    m, low, high = qs.seed_mean_ci([10.0, 14.0, 12.0])
    assert m == pytest.approx(12.0)
    assert high - m == pytest.approx(4.303 * 2.0 / math.sqrt(3))  # t(0.975, df=2) * sd / sqrt(n)
    assert qs.seed_mean_ci([7.0]) == (7.0, 7.0, 7.0)


def _load(name):
    return yaml.safe_load((CONFIGS / name).read_text())


def test_configs_share_data_prompts_and_seed():
    configs = {n: _load(n) for n in ("sft.yaml", "grpo.yaml", "intuitor.yaml", "eval.yaml")}
    datas, levels = [], {}
    for name, cfg in configs.items():
        data = dict(cfg["data"]["init_args"])
        data.pop("batch_size")  # prompts per step differ between SFT and RL
        levels[name] = data.pop("difficulty")  # the warm-up trains on easier items on purpose
        datas.append((cfg["data"]["class_path"], data))
        model = cfg["model"]["init_args"]
        assert model["prompt_format"] == "plain", name  # the warm-up sees the RL prompts exactly
        assert model["max_prompt_length"] == configs["grpo.yaml"]["model"]["init_args"]["max_prompt_length"], name
        assert model["sampling_seed"] == data["seed"], name  # one seed per quickstart run
        reports = [c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("TrainingReport")]
        assert len(reports) == 1, name
    assert all(d == datas[0] for d in datas)
    assert levels["grpo.yaml"] == levels["intuitor.yaml"] == levels["eval.yaml"]  # RL trains on what is scored
    assert configs["eval.yaml"]["model"]["init_args"]["val_temperature"] == 0.0
    assert configs["intuitor.yaml"]["model"]["init_args"]["rewards"]["correct"] == 0.0  # labels only monitored
    data = datas[0][1]
    held_out = data["num_val"] if "num_val" in data else data["eval_per_task"] * len(data["tasks"])
    assert held_out >= 200  # the held-out size


def _png_ok(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert mpimg.imread(path).ndim == 3


@pytest.mark.integration
def test_shortened_quickstart_reward_rises_and_report_is_written(tmp_path):
    out = tmp_path / "qs"
    results = qs.main(["--out", str(out), "--sft-steps", str(SFT_STEPS), "--rl-steps", str(RL_STEPS),
                       "--extra", "eval:--data.init_args.eval_per_task=12"])
    (result,) = results
    assert len(result.before.items) == len(result.after.items) == 12

    rl_dir = Path(result.rl_report_dir)
    rewards = [v for _, v in json.loads((rl_dir / "history.json").read_text())["reward"]]
    assert len(rewards) == RL_STEPS
    quarter = RL_STEPS // 4
    first, last = sum(rewards[:quarter]) / quarter, sum(rewards[-quarter:]) / quarter
    assert last > first, rewards

    for name in ("reward.png", "accuracy.png", "kl.png", "completions_mean_length.png"):
        _png_ok(rl_dir / name)
    _png_ok(Path(result.sft_report_dir) / "loss.png")
    report = (out / "report.md").read_text()
    for link in [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]:
        assert (out / link).is_file(), link
    assert "| 0 | 12 |" in report  # the seed row of the table
    assert "<answer>" in report  # held-out completions before / after
    assert (Path(result.sft_report_dir) / "metrics.csv").is_file()  # default CSV logger
    assert any(Path(result.sft_report_dir).glob("events.out.tfevents.*"))  # and TensorBoard
    assert (out / "seed0" / "sft_policy" / "model.safetensors").is_file()


def test_max_time_format_by_hand():
    assert qs.max_time(0.2) == "00:00:00:01"  # at least one second
    assert qs.max_time(245.3) == "00:00:04:06"  # rounded up
    assert qs.max_time(90061) == "01:01:01:01"


def _evaluation(correct):
    return qs.Evaluation(sum(correct) / len(correct), [{"prompt": f"p{i}", "score": float(c)} for i, c in enumerate(correct)], "")


def test_baseline_table_by_hand():
    """GRPO vs the continued warm-up on the same 4 items: after = 1 1 1 0, baseline = 1 0 0 0:
    paired differences 0 1 1 0, mean +50 points, sd 0.577, half width 1.96 * 0.577 / 2 = 56.6 points."""
    r = qs.SeedResult(3, _evaluation([0, 0, 1, 0]), _evaluation([1, 1, 1, 0]), "", "", steps={"sft_more": 900, "grpo": 600})
    r.baseline = _evaluation([1, 0, 0, 0])
    lines = qs.baseline_table([r], "grpo")
    assert lines[2] == "| 3 | 25.0 % | 25.0 % | 75.0 % | +50.0 | [-6.6, +106.6] | 900 / 600 |"
    assert qs.baseline_table([r, r], "grpo")[-1].startswith("| mean of 2 | 25.0 % | 25.0 % | 75.0 % | +50.0 |")
