"""Preemption: SIGTERM (what SLURM, Kubernetes and most schedulers send before killing a job), or
SIGUSR1 outside SLURM, saves a resumable checkpoint after the current step and stops the run with
exit code 143 (``lit_reason.utils.faults.Preempted``), so a wrapper or a scheduler sees an
interrupted job, not a finished one.

Without it Lightning stopped after the current step without saving and exited 0, and SIGUSR1
outside SLURM killed the process at once. The checkpoint is ``last.ckpt`` in the run's
ModelCheckpoint directory (``--ckpt_path last`` finds it), written at the same point of the step as
ModelCheckpoint's own (``on_train_batch_end``), so the resumed run continues exactly
(tests/test_preemption.py). Under SLURM with auto-requeue, Lightning's own SIGUSR1 handler (an
``hpc_ckpt_N.ckpt`` and a requeue) is left alone; configs/scale/slurm_example.sh resumes from the
newer of the two.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

from lit_reason.utils.faults import Preempted


class PreemptionCheckpoint(Callback):
    """Save ``last.ckpt`` and stop (exit 143) when SIGTERM, or SIGUSR1 outside SLURM, arrives.
    The CLI adds it to every ``fit``."""

    #: how long the launching rank waits for the ranks it started to save and exit
    wait_for_ranks_s = 120.0

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous_usr1: Any = None
        self._previous_term: Any = None
        self._other_term_handlers: list[Any] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """SIGTERM: a flag, replacing Lightning's handler (module docstring) and keeping the other
        handlers it composed (a user's own); SIGUSR1 when Lightning does not handle it (outside
        SLURM). Installed here, after Lightning registered its handlers, whose teardown restores
        the originals."""
        self.signal_name = None
        try:
            previous = signal.getsignal(signal.SIGTERM)
            handlers = getattr(previous, "signal_handlers", [previous])
            self._other_term_handlers = [h for h in handlers if callable(h) and not _is_lightning_sigterm_notifier(h)]
            self._previous_term = signal.signal(signal.SIGTERM, self._on_term)
        except ValueError:  # not the main thread
            pass
        usr1 = getattr(signal, "SIGUSR1", None)
        if usr1 is not None and signal.getsignal(usr1) in (signal.SIG_DFL, None):
            try:
                self._previous_usr1 = signal.signal(usr1, self._on_usr1)
            except ValueError:  # not the main thread
                pass

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        if isinstance(exception, Preempted):
            wait_for_launched_ranks(trainer, self.wait_for_ranks_s)

    def _restore_handlers(self) -> None:
        if self._previous_usr1 is not None and signal.getsignal(signal.SIGUSR1) == self._on_usr1:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
        if self._previous_term is not None and signal.getsignal(signal.SIGTERM) == self._on_term:
            signal.signal(signal.SIGTERM, self._previous_term)
        self._previous_usr1 = self._previous_term = None

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.signal_name = self.signal_name or "SIGUSR1"

    def _on_term(self, signum: int, frame: Any) -> None:
        self.signal_name = self.signal_name or "SIGTERM"
        for handler in self._other_term_handlers:
            handler(signum, frame)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        name = self.signal_name or ("SIGTERM" if trainer.received_sigterm else None)
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(name is not None, all=False):
            name = name or "a signal on another rank"  # every rank saves (and stops) together
        if name is None:
            return
        path = os.path.join(checkpoint_dir(trainer), "last.ckpt")
        trainer.save_checkpoint(path)
        raise Preempted(f"preempted by {name} at step {trainer.global_step}: saved {path}; resume with "
                        "--ckpt_path last (exit code 143)")


def _is_lightning_sigterm_notifier(handler: Any) -> bool:
    return getattr(handler, "__func__", None) is _SignalConnector._sigterm_notifier_fn


def wait_for_launched_ranks(trainer: L.Trainer, timeout_s: float) -> None:
    """On the rank that launched the others (Lightning's subprocess launcher): wait until they
    exited (they stop at the same step), at most ``timeout_s``."""
    import subprocess

    for proc in getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or []:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass


def checkpoint_dir(trainer: L.Trainer) -> str:
    """The first ModelCheckpoint's directory (where ``--ckpt_path last`` looks), else
    ``<default_root_dir>/checkpoints``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return str(callback.dirpath)
    return os.path.join(trainer.default_root_dir, "checkpoints")
