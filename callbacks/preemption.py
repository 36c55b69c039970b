"""Preemption: SIGTERM (what SLURM, Kubernetes and most schedulers send before killing a job), or
SIGUSR1, saves a resumable checkpoint after the current step and stops the run with exit code 143
(``lit_reason.utils.faults.Preempted``), so a wrapper or a scheduler sees an interrupted job, not a
finished one; under SLURM with auto-requeue, SIGUSR1 (``#SBATCH --signal=SIGUSR1@90``) also
requeues the job (``scontrol requeue <job id>``).

Without it Lightning stopped after the current step without saving and exited 0, and SIGUSR1
outside SLURM killed the process at once. The checkpoint is ``last.ckpt`` in the run's
ModelCheckpoint directory (``--ckpt_path last`` finds it), written at the same point of the step as
ModelCheckpoint's own (``on_train_batch_end``), so the resumed run continues exactly
(tests/test_preemption.py). Under SLURM, Lightning's own SIGUSR1 handler (an ``hpc_ckpt_N.ckpt``
and a requeue) is replaced: it saved inside the signal handler, in the middle of a step (not an
exact resume point) and, with several ranks, ran the save's barrier there, out of step with the
other ranks' collectives. configs/scale/slurm_example.sh resumes from the newest of
``hpc_ckpt_*.ckpt`` (older runs) and ``last.ckpt``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

from lit_reason.utils.faults import Preempted


class PreemptionCheckpoint(Callback):
    """Save ``last.ckpt`` and stop (exit 143) when SIGTERM or SIGUSR1 arrives (under SLURM,
    SIGUSR1 requeues the job too). The CLI adds it to every ``fit``."""

    #: how long the launching rank waits for the ranks it started to save and exit
    wait_for_ranks_s = 120.0

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous_usr1: Any = None
        self._previous_term: Any = None
        self._other_term_handlers: list[Any] = []
        self._requeue_signal: Any = None  # under SLURM with auto-requeue: the signal that requeues

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Flags, replacing Lightning's handlers (module docstring) and keeping the other SIGTERM
        handlers it composed (a user's own). Installed here, after Lightning registered its
        handlers, whose teardown restores the originals."""
        self.signal_name = None
        environment = trainer._accelerator_connector.cluster_environment
        self._requeue_signal = environment.requeue_signal if isinstance(environment, SLURMEnvironment) and \
            environment.auto_requeue else None
        try:
            previous = signal.getsignal(signal.SIGTERM)
            handlers = getattr(previous, "signal_handlers", [previous])
            self._other_term_handlers = [h for h in handlers if callable(h) and not _is_lightning_sigterm_notifier(h)]
            self._previous_term = signal.signal(signal.SIGTERM, self._on_term)
            usr1 = self._requeue_signal or getattr(signal, "SIGUSR1", None)
            if usr1 is not None and (self._requeue_signal is not None or signal.getsignal(usr1) in (signal.SIG_DFL, None)):
                self._previous_usr1 = (usr1, signal.signal(usr1, self._on_usr1))
        except ValueError:  # not the main thread
            pass

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        if isinstance(exception, Preempted):
            wait_for_launched_ranks(trainer, self.wait_for_ranks_s)

    def _restore_handlers(self) -> None:
        if self._previous_usr1 is not None and signal.getsignal(self._previous_usr1[0]) == self._on_usr1:
            signal.signal(*self._previous_usr1)
        if self._previous_term is not None and signal.getsignal(signal.SIGTERM) == self._on_term:
            signal.signal(signal.SIGTERM, self._previous_term)
        self._previous_usr1 = self._previous_term = None

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def _on_term(self, signum: int, frame: Any) -> None:
        self.signal_name = self.signal_name or "SIGTERM"
        for handler in self._other_term_handlers:
            handler(signum, frame)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        name = self.signal_name or ("SIGTERM" if trainer.received_sigterm else None)
        requeue = self._requeue_signal is not None and name == signal.Signals(self._requeue_signal).name
        if trainer.world_size > 1:  # every rank saves (and stops) together: a collective at the same point
            flags = torch.tensor([float(name is not None), float(requeue)], device=trainer.strategy.root_device)
            flags = trainer.strategy.reduce(flags, reduce_op="sum")
            name = name or ("a signal on another rank" if flags[0] > 0 else None)
            requeue = bool(flags[1] > 0)
        if name is None:
            return
        path = os.path.join(checkpoint_dir(trainer), "last.ckpt")
        disarm_child_process_observer()
        trainer.save_checkpoint(path)
        then = "resume with --ckpt_path last"
        if requeue:
            then = requeue_slurm_job() if trainer.is_global_zero else "the job is requeued"
        raise Preempted(f"preempted by {name} at step {trainer.global_step}: saved {path}; {then} (exit code 143)")


def requeue_slurm_job() -> str:
    """``scontrol requeue`` of this SLURM job (an array task as ``<array job>_<task>``), as
    Lightning's SLURM handler does; what happened, as the end of the one line."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        code = subprocess.call(["scontrol", "requeue", job])
    except OSError as err:
        code = f"{type(err).__name__}: {err}"
    if code == 0:
        return f"requeued SLURM job {job}, which resumes with --ckpt_path last (configs/scale/slurm_example.sh)"
    return f"requeuing SLURM job {job} failed (scontrol: {code}): resubmit it with --ckpt_path last"


def _is_lightning_sigterm_notifier(handler: Any) -> bool:
    return getattr(handler, "__func__", None) is _SignalConnector._sigterm_notifier_fn


def disarm_child_process_observer() -> None:
    """Lightning's subprocess launcher watches the ranks it started from a thread and SIGKILLs every
    process, itself included, once one of them exits non-zero: a rank exiting 143 after the save
    would kill rank 0 before it exits 143 itself. Disarmed for the preemption's exit, where
    :func:`wait_for_launched_ranks` waits for the ranks (and kills what is left) instead."""
    for thread in threading.enumerate():
        if thread.name == "child-process-observer" and hasattr(thread, "_run"):
            thread._run = lambda: True  # its loop ends at the next poll without killing


def wait_for_launched_ranks(trainer: L.Trainer, timeout_s: float) -> None:
    """On the rank that launched the others (Lightning's subprocess launcher): wait until they
    exited (they stop at the same step), at most ``timeout_s``, then kill what is left."""
    for proc in getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or []:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()


def checkpoint_dir(trainer: L.Trainer) -> str:
    """The first ModelCheckpoint's directory (where ``--ckpt_path last`` looks), else
    ``<default_root_dir>/checkpoints``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return str(callback.dirpath)
    return os.path.join(trainer.default_root_dir, "checkpoints")
