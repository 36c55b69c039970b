"""Faults that stop a run on purpose, each with the exit code the CLI ends with (docs/fault_tolerance.md).

The CLI prints their message as one line (``error: ...``) and exits with ``exit_code``, so a
scheduler or a wrapper script can tell a finished run (0) from bad input (2), a diverged run (3),
a checkpoint that could not be written (4) and a preempted run that saved and can resume (143,
what a shell reports for a process ended by SIGTERM).
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_CHECKPOINT_WRITE = 4
EXIT_PREEMPTED = 143


class RunStopped(RuntimeError):
    """A deliberate stop whose message is already the one line the user needs."""

    exit_code = EXIT_BAD_INPUT


class BadInput(RunStopped):
    """A setting found bad before anything loads (the one line names the fix)."""


class BadCheckpoint(RunStopped):
    """A checkpoint file that cannot be resumed from (names the file and what is wrong with it)."""


class TrainingDiverged(RunStopped):
    """Non-finite losses / gradients / rewards for too many optimizer steps in a row, or non-finite weights."""

    exit_code = EXIT_DIVERGED


class CheckpointWriteError(RunStopped):
    """A checkpoint could not be written (a full disk); the previous one is intact."""

    exit_code = EXIT_CHECKPOINT_WRITE


class Preempted(RunStopped):
    """SIGTERM / SIGUSR1 arrived: a resumable checkpoint was saved and the run stopped."""

    exit_code = EXIT_PREEMPTED
