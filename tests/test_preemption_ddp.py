"""Preemption of a 2-rank gloo DDP run on CPU through ``lit-reason fit`` (callbacks/preemption.py):
SIGTERM to one rank only, or to every process of the job (as SLURM sends it), saves one resumable
``last.ckpt`` and every rank exits 143; ``--ckpt_path last`` resumes at the saved step.

The first run is launched as torchrun or SLURM launch ranks (each process started here, with
``LOCAL_RANK``), so each rank's exit status can be read; the resumed run is launched by
Lightning itself (rank 0 starts rank 1), and its whole process group gets SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.test_preemption import _cli, _steps

DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--ckpt_path=last"]
LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GLOBAL_RANK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_steps(tmp_path: Path, n: int, procs: list[subprocess.Popen], timeout_s: float = 240) -> None:
    deadline = time.time() + timeout_s
    while len(_steps(tmp_path)) < n and all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.1)
    assert len(_steps(tmp_path)) >= n, [p.poll() for p in procs]


def preempted_line(err: str) -> str:
    return [x for x in err.splitlines() if x.startswith("error:")][-1]


@pytest.mark.integration
def test_sigterm_to_one_ddp_rank_saves_once_every_rank_exits_143_and_resumes(tmp_path, monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    port = str(free_port())
    logs = [open(tmp_path / f"rank{r}.log", "w+") for r in range(2)]
    ranks = [_cli(tmp_path, "--trainer.max_steps=200", *DDP, stdout=log, stderr=subprocess.STDOUT,
                  env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "NODE_RANK": "0",
                       "LOCAL_RANK": str(r)}) for r, log in enumerate(logs)]
    try:
        wait_for_steps(tmp_path, 2, ranks)
        ranks[1].send_signal(signal.SIGTERM)  # rank 1 only: rank 0 learns it from the step-end reduction
        codes = [p.wait(timeout=120) for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    out = [log.seek(0) or log.read() for log in logs]
    assert codes == [143, 143], [o[-2000:] for o in out]
    saved_at = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert saved_at >= 2 and _steps(tmp_path)[-1] == saved_at  # no step ran after the save
    assert preempted_line(out[1]).startswith(f"error: preempted by SIGTERM at step {saved_at}: saved ")
    assert preempted_line(out[0]).startswith(f"error: preempted by a signal on another rank at step {saved_at}: saved ")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["last.ckpt"]  # one checkpoint, no temporary file

    # resumed under Lightning's own launcher; SIGTERM to every process of the job, as SLURM sends it
    (tmp_path / "steps.txt").unlink()
    launcher = _cli(tmp_path, f"--trainer.max_steps={saved_at + 50}", *DDP, start_new_session=True)
    try:
        wait_for_steps(tmp_path, 1, [launcher])
        os.killpg(launcher.pid, signal.SIGTERM)
        _, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 143, err[-3000:]
    assert "Forcefully terminating" not in err  # Lightning's launcher did not SIGKILL the job when rank 1 exited 143
    steps = _steps(tmp_path)
    assert steps[0] == saved_at + 1  # resumed at the saved step
    again = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert again == steps[-1] and preempted_line(err).startswith(f"error: preempted by SIGTERM at step {again}")
    with pytest.raises(ProcessLookupError):  # the launcher waited for rank 1: nothing of the job is left
        os.killpg(launcher.pid, 0)
