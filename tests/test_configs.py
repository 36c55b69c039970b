"""Every YAML in configs/ parses through the CLI; every offline one trains for 2 steps."""

from pathlib import Path

import pytest
import yaml

from lit_reason.app.cli import main
from lit_reason.models.policy import PRESETS

CONFIGS = sorted(p for p in (Path(__file__).parent.parent / "configs").rglob("*.yaml"))
FAST = ["--trainer.max_steps=2", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false", "--trainer.num_sanity_val_steps=0", "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1", "--trainer.enable_model_summary=false"]


NEEDS_HUB = "# lit-reason: needs-hub"


def is_offline(path: Path) -> bool:
    """Configs on a built-in preset run here; paper recipes (hub model or data, several GPUs, marked
    with a ``# lit-reason: needs-hub`` line) are parse-only."""
    text = path.read_text()
    if NEEDS_HUB in text:
        return False
    cfg = yaml.safe_load(text) or {}
    model = cfg.get("model") or {}
    name = (model.get("init_args") or {}).get("model", "tiny") if isinstance(model, dict) else "tiny"
    devices = (cfg.get("trainer") or {}).get("devices", 1)
    return name in PRESETS and name in ("tiny", "tiny-llama", "small") and devices in (1, "1", "auto", None)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses(path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(path), "--print_config"])
    assert done.value.code in (0, None)
    assert "model:" in capsys.readouterr().out


@pytest.mark.parametrize("path", [p for p in CONFIGS if is_offline(p)], ids=lambda p: str(p.relative_to(p.parents[1])))
def test_offline_config_trains_two_steps(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(path), *FAST, f"--trainer.default_root_dir={tmp_path}"])


def test_unknown_config_key_fails_before_training(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: GRPO\n  init_args:\n    num_generation: 4\n")
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(bad)])
    assert done.value.code != 0
    assert "num_generation" in capsys.readouterr().err


def test_short_class_names_on_the_command_line(tmp_path):
    main(["fit", "--model=GRPO", "--model.num_generations=2", "--model.max_new_tokens=4", "--data=ToyDataModule",
          "--data.batch_size=2", "--data.val_size=0", *FAST, f"--trainer.default_root_dir={tmp_path}"])


def test_default_loggers_accept_a_datamodule_with_its_own_seed(tmp_path):
    """CSV + TensorBoard are on by default; Lightning merges module and data hparams for them, so
    the module's generator seed must not share the DataModule's ``seed`` name."""
    path = Path(__file__).parent.parent / "configs" / "math" / "synthetic.yaml"
    main(["fit", "--config", str(path), "--data.init_args.seed=3", "--model.init_args.sampling_seed=5",
          "--trainer.max_steps=1", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", "--trainer.num_sanity_val_steps=0",
          "--trainer.limit_val_batches=0", "--trainer.enable_checkpointing=false", f"--trainer.default_root_dir={tmp_path}"])
    assert list(tmp_path.rglob("metrics.csv")) and list(tmp_path.rglob("events.out.tfevents*"))


def test_metrics_are_logged_every_step_by_default(tmp_path):
    """Lightning's default (every 50 steps) logs nothing in a short RL run; ours logs each step."""
    main(["fit", "--model=GRPO", "--model.num_generations=2", "--model.max_new_tokens=4", "--data=ToyDataModule",
          "--data.batch_size=2", "--data.val_size=0", "--trainer.max_steps=3", "--trainer.enable_progress_bar=false",
          "--trainer.enable_checkpointing=false", "--trainer.num_sanity_val_steps=0", f"--trainer.default_root_dir={tmp_path}"])
    import csv

    (metrics,) = tmp_path.rglob("metrics.csv")
    steps = {row["step"] for row in csv.DictReader(metrics.open()) if row.get("reward")}
    assert steps == {"0", "1", "2"}
