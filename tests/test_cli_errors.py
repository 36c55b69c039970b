"""Bad input ends ``lit-reason`` in one line, ``error: <what to fix>``, exit code 2; bugs keep their traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from argparse import ArgumentError
from pathlib import Path

import lightning as L
import pytest

from lit_reason.app.cli import main
from lit_reason.app.cli_errors import one_line_error
from lit_reason.models.policy import PolicyLoadError

REPO = Path(__file__).resolve().parent.parent
QUICK = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false",
         "--trainer.max_steps=1"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh interpreter (no warnings filter: none may be printed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    env.pop("LIT_REASON_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "lit_reason.app.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def the_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- the console script


def test_wrong_model_path(tmp_path):
    line = the_error_line(run_cli("fit", "--model", "GRPO", "--model.model", "/no/such/dir", "--data", "ToyDataModule",
                                  *QUICK, cwd=tmp_path))
    assert "'/no/such/dir'" in line and "model=<preset>" in line


def test_unknown_key_in_a_yaml_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  class_path: GRPO\n  init_args:\n    num_generationz: 4\ndata: ToyDataModule\n")
    line = the_error_line(run_cli("fit", "--config", str(config), *QUICK, cwd=tmp_path))
    assert line == "error: model: Option 'num_generationz' is not accepted (did you mean 'num_generations'?)"


def test_invalid_value_raised_by_the_module(tmp_path):
    line = the_error_line(run_cli("fit", "--model", "GRPO", "--model.num_generations=1", "--data", "ToyDataModule",
                                  *QUICK, cwd=tmp_path))
    assert line.startswith("error: model.num_generations must be >= 2 (got 1)")


def test_missing_data_file(tmp_path):
    line = the_error_line(run_cli("fit", "--model", "GRPO", "--data", "MathDataModule", "--data.source=gsm8k",
                                  "--data.path=/no/such.jsonl", *QUICK, cwd=tmp_path))
    assert "data.path" in line and "'/no/such.jsonl'" in line and "does not exist" in line


# --------------------------------------------------------------------------- in process (cheap: parse errors)


@pytest.fixture
def no_argv(monkeypatch):
    """main(args) with pytest's own sys.argv would add LightningCLI's "args and sys.argv" warning."""
    monkeypatch.setattr(sys, "argv", ["lit-reason"])


@pytest.mark.parametrize("args, expected", [
    (["fit", "--config", "/no/such.yaml"], "error: config: File does not exist: '/no/such.yaml'"),
    (["fit", "--model", "GRPOX", "--data", "ToyDataModule"], "error: model: Expected a dot import path string: GRPOX (did you mean 'GRPO'?)"),
    (["fit", "--model", "GRPO", "--model.num_generations=abc"],
     "error: model.num_generations: Expected a <class 'int'>. Got value: abc"),
    (["fit", "--model", "GRPO", "--trainer.no_such_flag=1"], "error: unrecognized arguments: --trainer.no_such_flag=1"),
    (["fit", "--model", "GRPO", "--data", "ToyDataModule", "--trainer.accelerator=gpu"],
     "error: trainer: No supported gpu backend found!"),
])
def test_parse_errors_are_one_line(args, expected, capsys, no_argv):
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line.strip()] == [expected]


def test_unknown_enigmata_task(capsys, no_argv):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model", "GRPO", "--data", "EnigmataDataModule", "--data.tasks=[no_such_task]", *QUICK])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data.tasks: unknown task 'no_such_task'; valid tasks: ") and "\n" not in err


def test_export_uses_the_same_form(tmp_path, capsys):
    from lit_reason.app.export import main as export_main

    assert export_main(["--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.ckpt" in err and "\n" not in err


# --------------------------------------------------------------------------- one_line_error on built chains


def raise_from(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer`` raised ``from inner`` (both with real tracebacks), as jsonargparse does."""
    try:
        try:
            raise inner
        except BaseException as err:
            raise outer from err
    except BaseException as err:
        return err


def caught(fn, *args) -> BaseException:
    try:
        fn(*args)
    except BaseException as err:
        return err
    raise AssertionError("no exception")


class FileData(L.LightningDataModule):
    def setup(self, stage=None):
        from datamodules.math_data import read_rows

        read_rows("/no/such/rows.jsonl")  # project code raises the one-line FileNotFoundError

    def train_dataloader(self):
        from datamodules.math_data import read_rows

        read_rows("/no/such/rows.jsonl")  # the same error once training has started: a bug, not a setting


def test_policy_error_is_found_under_jsonargparse_wrappers():
    policy = raise_from(PolicyLoadError("could not load model 'x': pass model=<preset>"), OSError("hub unreachable"))
    wrapped = raise_from(ValueError("Does not validate against any of the Union subtypes\nSubtypes: [...]"), policy)
    outer = raise_from(RuntimeError("while instantiating"), wrapped)
    assert one_line_error(outer) == "could not load model 'x': pass model=<preset>"


def test_settings_check_in_setup_is_input_but_the_same_error_in_training_is_a_bug():
    in_setup = caught(FileData().setup, "fit")
    assert "set data.path" in one_line_error(raise_from(ValueError("Does not validate ..."), in_setup))
    assert one_line_error(caught(FileData().train_dataloader)) is None


def test_bugs_keep_their_traceback():
    assert one_line_error(caught(lambda: [][1])) is None
    assert one_line_error(caught(lambda: int("abc"))) is None  # a ValueError, but not from project code
    assert one_line_error(RuntimeError("CUDA out of memory")) is None


def test_argument_error_chain_is_condensed_to_key_and_sentence():
    innermost = ValueError("Expected a <class 'int'>. Got value: abc")
    key = raise_from(ArgumentError(None, 'Parser key "num_generations":\n  Expected a <class \'int\'>. Got value: abc'),
                     innermost)
    union = raise_from(ValueError("Problem with given class_path 'lit_reason.modules.GRPO':\n  Parser key ..."), key)
    outer = raise_from(ArgumentError(None, 'Parser key "model":\n  Does not validate against any of the Union subtypes\n'
                                           "  Given value: NestedArg(key='num_generations', val='abc')"), union)
    assert one_line_error(outer) == "model.num_generations: Expected a <class 'int'>. Got value: abc"
    assert one_line_error(ArgumentError(None, "unrecognized arguments: --x=1")) == "unrecognized arguments: --x=1"
