"""Bad values and faults through ``lit-reason fit``: one line each, the documented exit code
(lit_reason.utils.faults): 2 bad input, 3 diverged."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from jsonargparse import Namespace

from datamodules.toy import ToyDataModule
from lit_reason.app.cli import main
from lit_reason.app.cli_errors import one_line_error
from lit_reason.app.fit_checks import check_batch_division
from lit_reason.modules import GRPO
from lit_reason.utils.faults import BadInput

QUICK = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0"]


def fit(capsys, *args: str, model: str = "GRPO") -> tuple[int, list[str]]:
    """``lit-reason fit`` in this process: (exit code, the non-empty stderr lines that start with error:)."""
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model", model, "--data", "ToyDataModule", *QUICK, *args])
    return done.value.code, [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]


@pytest.mark.parametrize("setting, message", [
    (dict(temperature=0.0), "model.temperature must be > 0 for training (got 0.0)"),
    (dict(lr=-1.0), "model.lr must be >= 0 (got -1.0)"),
    (dict(beta=-0.1), "model.beta must be >= 0 (got -0.1)"),
    (dict(max_grad_norm=-1.0), "model.max_grad_norm must be >= 0 or null (got -1.0"),
])
def test_bad_training_values_are_refused_before_the_model_loads(setting, message, monkeypatch):
    monkeypatch.setattr("lit_reason.modules.grpo.load_policy", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(ValueError) as err:
        GRPO(model="tiny", **setting)
    assert str(err.value).startswith(message)


def test_unknown_strategy_and_accelerator_list_the_choices():
    for kwargs, start in [(dict(strategy="dpp"), "trainer.strategy='dpp' is not a known strategy: choose one of ['auto', "),
                          (dict(accelerator="gpuu"), "trainer.accelerator='gpuu' is not a known accelerator: choose one of ['auto', 'cpu', 'cuda'")]:
        with pytest.raises(ValueError) as err:
            L.Trainer(**kwargs)
        line = one_line_error(err.value)
        assert line.startswith(start), line


def test_micro_batch_division_is_checked_from_the_config(capsys, monkeypatch):
    model = Namespace(class_path="GRPO", init_args=Namespace(num_generations=4, minibatch_size=None, micro_batch_size=3))
    with pytest.raises(BadInput, match="model.micro_batch_size=3 must divide the rollout batch data.batch_size x num_generations = 8"):
        check_batch_division(model, Namespace(class_path="ToyDataModule", init_args=Namespace(batch_size=2)))
    check_batch_division(model, Namespace(class_path="ToyDataModule", init_args=Namespace(batch_size=3)))  # 12 % 3 == 0
    monkeypatch.setattr("lit_reason.modules.grpo.load_policy", lambda *a, **k: pytest.fail("the model loaded"))
    code, lines = fit(capsys, "--model.micro_batch_size=3", "--data.batch_size=2", "--trainer.max_steps=1")
    assert code == 2 and lines == ["error: model.micro_batch_size=3 must divide the rollout batch data.batch_size x "
                                   "num_generations = 8"]


def test_too_few_rows_for_one_batch(capsys):
    data = ToyDataModule(train_size=3, batch_size=4)
    data.setup("fit")
    with pytest.raises(BadInput, match="the training set has 3 rows, fewer than data.batch_size=4"):
        data.train_dataloader()
    code, lines = fit(capsys, "--data.train_size=3", "--data.batch_size=4", "--trainer.max_steps=1",
                      "--trainer.enable_checkpointing=false")
    assert code == 2 and lines == ["error: data: the training set has 3 rows, fewer than data.batch_size=4: not one "
                                   "batch to train on; lower batch_size or add rows"]


def test_missing_checkpoint_file_is_one_line(capsys, tmp_path):
    code, lines = fit(capsys, f"--ckpt_path={tmp_path}/nope.ckpt", "--trainer.max_steps=1")
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: checkpoint {tmp_path}/nope.ckpt: no such file")


def test_diverged_run_exits_3_in_one_line(capsys, tmp_path):
    code, lines = fit(capsys, "--model.num_generations=4", "--model.max_new_tokens=6", "--data.batch_size=2",
                      "--trainer.max_steps=10", f"--trainer.default_root_dir={tmp_path}",
                      model="tests.test_divergence.InfRewardGRPO")
    assert code == 3 and len(lines) == 1, lines
    assert lines[0].startswith("error: training diverged: 3 optimizer steps in a row had a non-finite value")


def test_resume_through_the_cli_follows_the_config_explicit_path_and_last_alike(capsys, tmp_path):
    """LightningCLI loaded an explicit checkpoint's settings over the config's (a changed lr was
    ignored) while ``last`` applied them; a beta 0 -> 0.04 change ended in a traceback. Now: one
    warning listing the change and the config's value applied, or one line for a frozen change."""
    ckpt_dir = tmp_path / "ckpt"
    callback = ('--trainer.callbacks=[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
                f'"init_args": {{"dirpath": "{ckpt_dir}", "save_last": true}}}}]')
    base = ["--model.num_generations=2", "--model.max_new_tokens=4", "--data.batch_size=2", "--data.train_size=4",
            f"--trainer.default_root_dir={tmp_path}", callback]
    with pytest.raises(SystemExit) as done:  # a finished run exits through LightningCLI normally: no SystemExit
        main(["fit", "--model", "GRPO", "--data", "ToyDataModule", *QUICK, *base, "--trainer.max_steps=1"])
        raise SystemExit(0)
    assert done.value.code == 0 and (ckpt_dir / "last.ckpt").exists()

    code, lines = fit(capsys, *base, "--trainer.max_steps=2", "--ckpt_path=last", "--model.beta=0.04")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: checkpoint {ckpt_dir}/last.ckpt cannot resume under this config: model.beta "
                               "0.0 -> 0.04 (the KL reference appears)")

    with pytest.warns(UserWarning, match=r"changed setting\(s\), the config's values apply: model.lr 1e-06 -> 0.005"):
        with pytest.raises(SystemExit) as done:
            main(["fit", "--model", "GRPO", "--data", "ToyDataModule", *QUICK, *base, "--trainer.max_steps=2",
                  f"--ckpt_path={ckpt_dir}/last.ckpt", "--model.lr=0.005"])
            raise SystemExit(0)
    assert done.value.code == 0
    saved = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2 and saved["hyper_parameters"]["lr"] == 0.005
    assert saved["optimizer_states"][0]["param_groups"][0]["lr"] == 0.005


def test_the_yaml_of_docs_fault_tolerance_builds():
    """Every YAML block of docs/fault_tolerance.md: the ModelCheckpoint and model.divergence settings it shows."""
    import re
    from pathlib import Path

    import yaml
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_reason.modules.divergence import DivergenceSettings
    from lit_reason.utils.config_dataclass import parse_config

    text = (Path(__file__).resolve().parent.parent / "docs" / "fault_tolerance.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    assert len(blocks) == 2
    (ckpt,) = blocks[0]["trainer"]["callbacks"]
    assert ckpt["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"
    assert ModelCheckpoint(**ckpt["init_args"]).dirpath.endswith("runs/my_run/checkpoints")
    settings = parse_config(DivergenceSettings, blocks[1]["model"]["init_args"]["divergence"], "model.divergence")
    assert settings == DivergenceSettings()  # the doc shows the defaults
