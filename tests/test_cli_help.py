"""The CLI a user expects: --help lists every command, typos get the closest valid name, a model
name that cannot load fails before any download is tried."""

import pytest

from lit_reason.app.cli import COMMANDS, main


def test_help_lists_every_command_and_each_command_answers_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "export", "evaluate", "gallery"):
        assert f"\n  {command} " in out
    for command in COMMANDS:  # every command listed is one that main() dispatches
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0, command
        assert "usage" in capsys.readouterr().out.lower(), command


@pytest.mark.parametrize("arg, suggestion", [
    ("--model.num_generation=4", "model: Option 'num_generation' is not accepted (did you mean 'num_generations'?)"),
    ("--model=GRPOO", "(did you mean 'GRPO'?)"),
    ("--data=CustomDataModul", "(did you mean 'CustomDataModule'?)"),
    ("--data.batch_sise=3", "(did you mean 'batch_size'?)"),
])
def test_unknown_key_or_class_suggests_the_closest(capsys, arg, suggestion):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model=GRPO", "--data=ToyDataModule", arg])
    assert done.value.code == 2
    assert suggestion in capsys.readouterr().err


def test_reward_name_typo_suggests_the_builtin():
    from lit_reason.tasks.rewards import resolve_reward

    with pytest.raises(ValueError, match="unknown reward 'corect': did you mean 'correct'?"):
        resolve_reward("corect")


def test_model_name_typo_offline_fails_before_any_download(monkeypatch, capsys):
    import huggingface_hub.constants
    import transformers

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_download(*args, **kwargs):
        raise AssertionError("from_pretrained must not be reached")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_download)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_download)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model=GRPO", "--model.model=smolm2-135m-instruct", "--data=ToyDataModule"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "could not load model 'smolm2-135m-instruct'" in err and "did you mean 'smollm2-135m-instruct'?" in err
