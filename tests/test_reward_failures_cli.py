"""Through the CLI: a reward that breaks mid-run ends it in one line, and the last good checkpoint
survives (the failure is raised in the rollout step, before any update or checkpoint)."""

import textwrap

import pytest
import torch

from lit_reason.app.cli import main

REWARDS = textwrap.dedent("""
    import sys, time
    CALLS = {"n": 0}

    def _nth():
        CALLS["n"] += 1
        return CALLS["n"]

    def inf_on_second_step(completions, **kwargs):
        value = float("inf") if _nth() == 2 else 0.5
        return [value] * len(completions)

    def exit_on_second_step(completions, **kwargs):
        if _nth() == 2:
            sys.exit(3)
        return [0.5] * len(completions)

    def hangs_on_second_step(completions, **kwargs):
        if _nth() == 2:
            time.sleep(60)
        return [0.5] * len(completions)
    """)


@pytest.mark.integration
@pytest.mark.parametrize("fn, expected", [("inf_on_second_step", "returned inf, not a finite number"),
                                          ("exit_on_second_step", "called sys.exit(3)"),
                                          ("hangs_on_second_step", "did not return within 1 s")])
def test_broken_reward_ends_in_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys, fn, expected):
    module = f"cli_rewards_{fn}"
    (tmp_path / f"{module}.py").write_text(REWARDS)
    monkeypatch.chdir(tmp_path)  # a module in the working directory is found without PYTHONPATH
    args = ["fit", "--model=GRPO", "--model.model=tiny", "--model.num_generations=2", "--model.max_new_tokens=4",
            "--model.prompt_format=plain", "--model.lr=1e-2", f"--model.rewards={{correct: 1.0, {module}:{fn}: 1.0}}",
            "--model.reward_timeout=1", "--data=ToyDataModule", "--data.batch_size=2", "--data.val_size=0",
            "--trainer.max_steps=4", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.callbacks+=ModelCheckpoint", f"--trainer.callbacks.dirpath={tmp_path}/ckpt",
            "--trainer.callbacks.save_last=true", "--trainer.callbacks.every_n_train_steps=1"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: reward '{module}:{fn}' ") and expected in err[-1], err[-3:]
    assert "on row 0 (prompt: '" in err[-1] and not any("Traceback" in line for line in err)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 1  # step 1's checkpoint, never replaced
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
