"""Preemption: SIGTERM (and SIGUSR1 outside SLURM) saves last.ckpt after the current step and exits
143; the resumed run continues exactly where the uninterrupted one would be (callbacks/preemption.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from callbacks.preemption import PreemptionCheckpoint
from datamodules.toy import ToyDataModule
from lit_reason.utils.faults import EXIT_PREEMPTED, Preempted
from tests.test_resume import Recorder, assert_same_after, assert_same_state, run, toy_module, trainer

REPO = Path(__file__).resolve().parent.parent


class SignalAt(Callback):
    """Sends ``signum`` to this very process during the step that starts at ``global_step == at``."""

    def __init__(self, at: int, signum: int) -> None:
        self.at, self.signum = at, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_saves_and_the_resumed_run_matches_the_uninterrupted_one(tmp_path, signum):
    def make_data():
        return ToyDataModule(train_size=8, val_size=0, batch_size=2)

    module_a, rec_a, t_a = run(tmp_path / "a", toy_module, make_data)
    import lightning as L

    L.seed_everything(0)
    module_b, rec_b = toy_module(), Recorder()
    # every=100: ModelCheckpoint itself saves nothing; the only checkpoint is the preemption's
    t_b = trainer(tmp_path / "b", [rec_b, SignalAt(2, signum), PreemptionCheckpoint()], every=100)
    with pytest.raises(Preempted, match=rf"preempted by {signal.Signals(signum).name} at step 3: saved .*last.ckpt") \
            as err:
        t_b.fit(module_b, datamodule=make_data())
    assert err.value.exit_code == EXIT_PREEMPTED == 143
    assert torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 3
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)  # the handler is gone after fit
    module_c, rec_c, t_c = run(tmp_path / "b", toy_module, make_data, resume=True)
    assert_same_after(rec_a, rec_c, start=3)
    assert_same_state(module_a, t_a, module_c, t_c)


STEP_FILE_CALLBACK = "tests.test_preemption.StepFile"


class StepFile(Callback):
    """Writes the finished step to ``path`` (rank 0) and slows each step, so a test can signal a real run mid-way."""

    def __init__(self, path: str, delay: float = 0.3) -> None:
        self.path, self.delay = path, delay

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(f"{trainer.global_step}\n")
        time.sleep(self.delay)


def _cli(tmp_path: Path, *extra: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """``lit-reason fit`` of a tiny run in ``tmp_path`` (``env``: variables added to this process's)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    config = tmp_path / "run.yaml"
    config.write_text(f"""\
model:
  class_path: GRPO
  init_args: {{model: tiny, num_generations: 2, max_new_tokens: 4}}
data:
  class_path: ToyDataModule
  init_args: {{train_size: 64, batch_size: 2}}
trainer:
  logger: false
  enable_progress_bar: false
  limit_val_batches: 0
  num_sanity_val_steps: 0
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp_path}/checkpoints, every_n_train_steps: 100, save_last: true}}
    - class_path: {STEP_FILE_CALLBACK}
      init_args: {{path: {tmp_path}/steps.txt}}
""")
    return subprocess.Popen([sys.executable, "-m", "lit_reason.app.cli", "fit", "--config", str(config), *extra],
                            cwd=tmp_path, env=env, text=True,
                            **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen})


def _steps(tmp_path: Path) -> list[int]:
    path = tmp_path / "steps.txt"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_cli_run_signalled_exits_143_and_resumes_with_ckpt_path_last(tmp_path, signum):
    proc = _cli(tmp_path, "--trainer.max_steps=200", "--ckpt_path=last")
    deadline = time.time() + 240
    while len(_steps(tmp_path)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert "starting fresh" in err  # --ckpt_path last with no checkpoint yet says so
    assert proc.returncode == 143, err[-3000:]
    last_line = [x for x in err.splitlines() if x.strip()][-1]
    saved_at = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert last_line == (f"error: preempted by {signal.Signals(signum).name} at step {saved_at}: saved "
                         f"{tmp_path}/checkpoints/last.ckpt; resume with --ckpt_path last (exit code 143)")
    assert _steps(tmp_path)[-1] == saved_at  # no step ran after the save

    (tmp_path / "steps.txt").unlink()
    proc = _cli(tmp_path, f"--trainer.max_steps={saved_at + 2}", "--ckpt_path=last")
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert _steps(tmp_path) == [saved_at + 1, saved_at + 2]  # resumed at the saved step


def _slurm_script_args(tmp_path: Path) -> list[str]:
    """configs/scale/slurm_example.sh run with a stand-in ``srun`` that prints the command it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NAME": "job", "SLURM_NNODES": "2",
           "SLURM_NTASKS_PER_NODE": "8"}
    done = subprocess.run(["bash", str(REPO / "configs/scale/slurm_example.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def _touch(path: Path, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))


def test_slurm_example_resumes_from_the_newest_checkpoint_of_its_run_dir(tmp_path):
    args = _slurm_script_args(tmp_path)  # first submission: nothing to resume
    assert "--ckpt_path" not in args
    assert args[args.index("--trainer.callbacks.dirpath") + 1] == "runs/job/checkpoints"
    assert args[args.index("--trainer.default_root_dir") + 1] == "runs/job"
    run_dir = tmp_path / "runs" / "job"
    _touch(run_dir / "checkpoints" / "last.ckpt", 1000)
    args = _slurm_script_args(tmp_path)
    assert args[args.index("--ckpt_path") + 1] == "runs/job/checkpoints/last.ckpt"
    _touch(run_dir / "hpc_ckpt_1.ckpt", 2000)  # SIGUSR1 before the time limit: Lightning's newer hpc checkpoint
    args = _slurm_script_args(tmp_path)
    assert args[args.index("--ckpt_path") + 1] == "runs/job/hpc_ckpt_1.ckpt"
    _touch(run_dir / "checkpoints" / "last.ckpt", 3000)  # then the requeued job saved again
    args = _slurm_script_args(tmp_path)
    assert args[args.index("--ckpt_path") + 1] == "runs/job/checkpoints/last.ckpt"


def test_documented_scale_configs_keep_one_checkpoint_directory_per_run():
    """Without a dirpath each run wrote into a new lightning_logs/version_N and --ckpt_path last
    never found the previous run's last.ckpt (3 of 3 restarts trained again from step 0)."""
    import yaml

    dirs = {}
    for path in sorted((REPO / "configs" / "scale").glob("*.yaml")):
        callbacks = yaml.safe_load(path.read_text())["trainer"]["callbacks"]
        (ckpt,) = [c for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
        assert ckpt["init_args"]["save_last"] is True, path
        dirs[path.name] = ckpt["init_args"]["dirpath"]
    assert len(dirs) == 5 and len(set(dirs.values())) == 5, dirs  # one directory each, none shared


SLURM_JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "job", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
             "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
             "SLURM_NODELIST": "localhost", "MASTER_ADDR": "127.0.0.1"}


@pytest.mark.integration
def test_under_a_faked_slurm_sigusr1_saves_requeues_and_the_script_resumes_the_newest(tmp_path):
    """No cluster: SLURM's variables, and a stand-in ``scontrol`` first on PATH that records its
    arguments. SIGUSR1 (``--signal=SIGUSR1@90``) saves ``last.ckpt`` after the current step, runs
    ``scontrol requeue 4242`` and exits 143 (Lightning's handler saved ``hpc_ckpt_1.ckpt`` from
    inside the signal handler, mid-step); configs/scale/slurm_example.sh, run on that directory
    beside an older ``hpc_ckpt_1.ckpt``, resumes from ``last.ckpt``, the newest."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/scontrol.calls\n')
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')  # prints the command it was given
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(0o755)
    env = {**SLURM_JOB, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = _cli(tmp_path, "--trainer.max_steps=200", env=env)
    deadline = time.time() + 240
    while len(_steps(tmp_path)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 4242\n"
    saved_at = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert _steps(tmp_path)[-1] == saved_at and not list(tmp_path.glob("hpc_ckpt_*.ckpt"))
    last_line = [x for x in err.splitlines() if x.strip()][-1]
    assert last_line == (f"error: preempted by SIGUSR1 at step {saved_at}: saved {tmp_path}/checkpoints/last.ckpt; "
                         "requeued SLURM job 4242, which resumes with --ckpt_path last "
                         "(configs/scale/slurm_example.sh) (exit code 143)")

    _touch(tmp_path / "hpc_ckpt_1.ckpt", time.time() - 60)  # an older run's Lightning hpc checkpoint
    script = subprocess.run(["bash", str(REPO / "configs/scale/slurm_example.sh")], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30, env={**os.environ, **env, "RUN_DIR": str(tmp_path)})
    args = script.stdout.split("\n")
    assert args[args.index("--ckpt_path") + 1] == f"{tmp_path}/checkpoints/last.ckpt", script.stderr
