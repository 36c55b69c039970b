"""The scorer process: runs reasoning-gym's ``score_answer`` on untrusted answers, bounded.

Why a process: a reasoning-gym scorer is third-party code (sympy simplification, big-integer
powers, regexes) that can run for minutes on a hostile answer, and Python can only stop such a
call from outside. :class:`ScorerProcess` keeps one child per parent process (started on first
use, ~1.5 s to import reasoning-gym), sends it one answer at a time, and kills it when an answer
takes longer than the time limit (that answer scores 0; the next call starts a fresh child). The
child caps its own address space, so an answer cannot exhaust the machine's memory either, and it
runs with the evaluating scorers guarded (:mod:`datamodules.reasoning_gym.guards`).

Frames are length-prefixed pickles over the child's stdin / stdout. The child runs this file as a
script (not ``multiprocessing``, which would re-import the user's main script) and loads
``guards.py`` by path, so it imports reasoning-gym and nothing of Lightning or torch.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

#: Default seconds one answer may take to score.
DEFAULT_TIMEOUT_S = 2.0
#: Seconds the child may take to start (import reasoning-gym and sympy).
STARTUP_TIMEOUT_S = 120.0
#: Address-space limit of the child (bytes): far above what any scorer needs (~300 MB).
MEMORY_LIMIT_BYTES = 4 << 30
_HEADER = struct.Struct("<Q")


# ---- framing --------------------------------------------------------------------------------
def write_frame(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """``n`` bytes from ``fd`` before ``deadline`` (time.monotonic), or None (timeout / EOF)."""
    import time

    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# ---- the child -------------------------------------------------------------------------------
def _score_one(cache: dict, task: str, config: Any, answer: str, entry: dict) -> float:
    from reasoning_gym.factory import DATASETS

    key = (task, repr(config))
    dataset = cache.get(key)
    if dataset is None:
        dataset = cache[key] = DATASETS[task][0](config=config)
    value = float(dataset.score_answer(answer, entry))
    return value if 0.0 <= value <= 1.0 else 0.0


def serve() -> None:
    """The child's loop: one ``(task, config, answer, entry)`` frame in, one float out."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]  # run as a script: no sibling shadowing
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    import importlib.util

    import reasoning_gym  # noqa: F401  (registers the tasks)

    spec = importlib.util.spec_from_file_location("_rg_guards", Path(__file__).with_name("guards.py"))
    guards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guards)
    guards.install()
    out, fd = sys.stdout.buffer, sys.stdin.fileno()
    sys.stdout = sys.stderr  # scorers that print must not corrupt the frames
    write_frame(out, "ready")
    cache: dict = {}
    while True:
        header = read_exact(fd, _HEADER.size, None)
        if header is None:
            return
        request = read_exact(fd, _HEADER.unpack(header)[0], None)
        if request is None:
            return
        try:
            value = _score_one(cache, *pickle.loads(request))
        except BaseException:  # noqa: BLE001 - a scorer failure is a wrong answer; keep serving
            value = 0.0
        write_frame(out, value)


# ---- the parent side ------------------------------------------------------------------------
class ScorerProcess:
    """One scorer child per parent process; :meth:`score` never raises and returns within
    ``timeout`` seconds (plus the child's start-up on first use or after a kill)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.kills = 0  # answers that ran out of time (or crashed the child)

    def _start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        if self._receive(STARTUP_TIMEOUT_S) != "ready":
            self._stop()
            raise RuntimeError("the reasoning-gym scorer process did not start (is reasoning-gym importable?)")

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass

    def _receive(self, timeout: float) -> Any:
        import time

        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        header = read_exact(fd, _HEADER.size, deadline)
        if header is None:
            return None
        body = read_exact(fd, _HEADER.unpack(header)[0], deadline)
        return None if body is None else pickle.loads(body)

    def score(self, task: str, config: Any, answer: str, entry: dict, timeout: float = DEFAULT_TIMEOUT_S) -> float:
        with self._lock:
            if os.getpid() != self._pid:  # a forked copy (DataLoader worker): own child
                self._proc, self._pid = None, os.getpid()
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                write_frame(self._proc.stdin, (task, config, answer, entry))
                value = self._receive(timeout)
            except (OSError, ValueError, pickle.PicklingError):
                value = None
            if not isinstance(value, float):
                self.kills += 1
                self._stop()
                return 0.0
            return value

    def close(self) -> None:
        with self._lock:
            self._stop()


_SCORER: ScorerProcess | None = None


def scorer() -> ScorerProcess:
    """This process's scorer child (created lazily, killed at exit)."""
    global _SCORER
    if _SCORER is None:
        import atexit

        _SCORER = ScorerProcess()
        atexit.register(_SCORER.close)
    return _SCORER


if __name__ == "__main__":
    serve()
