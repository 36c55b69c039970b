"""Run untrusted Python (a model's code) in a separate, bounded process; never in the trainer's.

Each run gets its own temporary directory (its working directory and the only place it may
write), a clean environment (none of the trainer's variables), ``python -I`` (no user site, no
PYTHON* variables), kernel limits set in the child before the code runs (CPU seconds, address
space, file size = the output cap, no new processes, few open files), an audit hook that refuses
sockets, process creation, ``ctypes``, writes outside the directory and any read of ``/proc`` (the
trainer's ``/proc/<pid>/environ``), and, where the machine allows, an empty network namespace
(``unshare -rn``). The trainer waits at most ``wall_seconds`` and then kills the process group.
Whatever happens comes back as a :class:`SandboxResult`; nothing here raises on the code's account.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

#: runs in the child: limits first, then the audit hook, then the model's code (from code.py)
_BOOTSTRAP = r'''
import os, resource, sys
cpu, memory, output = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
HOME = os.path.realpath(os.getcwd())
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
DENIED = ("socket.", "subprocess.", "os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn",
          "os.kill", "os.killpg", "ctypes.", "_ctypes.", "os.putenv", "os.unsetenv", "sys.remote_exec")
PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink", "os.link",
               "os.truncate", "os.utime", "shutil.copyfile", "shutil.copytree", "shutil.move", "shutil.rmtree"}
def inside(path):
    return os.path.realpath(path) == HOME or os.path.realpath(path).startswith(HOME + os.sep)
def is_proc(path):
    return os.path.realpath(path).startswith("/proc")
def hook(event, args):
    if event.startswith(DENIED):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        mode, flags = args[1] or "", args[2] or 0
        writes = any(c in str(mode) for c in "wax+") or bool(flags & WRITE_FLAGS)
        if is_proc(path) or (writes and not inside(path)):
            raise PermissionError(f"sandbox: may not open {path!r}" + (" for writing" if writes else ""))
    if event in ("os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)) and is_proc(os.fsdecode(args[0])):
        raise PermissionError("sandbox: /proc is not readable")
    if event in PATH_EVENTS:
        for path in args[:2]:
            if isinstance(path, (str, bytes)) and not inside(os.fsdecode(path)):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory")
code = open("code.py").read()
sys.addaudithook(hook)
del hook
namespace = {"__name__": "__main__"}
exec(compile(code, "code.py", "exec"), namespace)
'''


@dataclass
class SandboxLimits:
    """Per run: CPU seconds, wall seconds, address space (MiB), output bytes kept (stdout+stderr)."""

    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 16_384


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None: killed at the wall-time limit
    timed_out: bool
    output_truncated: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def report(self) -> str:
        """The observation a model reads: its output, and what went wrong if something did."""
        parts = [self.stdout.rstrip()]
        if self.timed_out:
            parts.append("[killed: wall-time limit]")
        elif self.exit_code != 0:
            signal_name = signal.Signals(-self.exit_code).name if self.exit_code and self.exit_code < 0 else None
            tail = self.stderr.strip().splitlines()[-1:] if self.stderr.strip() else []
            parts.append(f"[error: {signal_name or 'exit ' + str(self.exit_code)}] " + " ".join(tail))
        if self.output_truncated:
            parts.append("[output truncated]")
        return "\n".join(p for p in parts if p).strip() or "[no output]"


@functools.lru_cache(maxsize=1)
def network_namespace_prefix() -> tuple[str, ...]:
    """``("unshare", "-rn")`` when an unprivileged user + network namespace can be made here (then
    the code has no network device at all); else () and the audit hook alone refuses sockets."""
    tool = shutil.which("unshare")
    if tool is None:
        return ()
    try:
        ok = subprocess.run([tool, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (tool, "-rn") if ok else ()


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` in a fresh sandboxed interpreter and return what it printed and how it ended."""
    limits = limits or SandboxLimits()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lit-reason-sandbox-") as home:
        with open(os.path.join(home, "code.py"), "w") as f:
            f.write(code)
        out_path, err_path = os.path.join(home, ".stdout"), os.path.join(home, ".stderr")
        cap = limits.max_output_bytes + 1
        file_limit = cap + 65_536  # room for a traceback after a full stdout; the tail of stderr is what is kept
        command = [*network_namespace_prefix(), sys.executable, "-I", "-c", _BOOTSTRAP, str(limits.cpu_seconds),
                   str(limits.memory_mb * 2**20), str(file_limit)]
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(command, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        stdout, stderr = _read_capped(out_path, cap), _read_tail(err_path, cap)
        truncated = len(stdout) >= cap or len(stderr) >= cap
        keep = limits.max_output_bytes
        return SandboxResult(stdout[:keep].decode(errors="replace"), stderr[-keep:].decode(errors="replace"),
                             None if timed_out else proc.returncode, timed_out, truncated, time.perf_counter() - start)


def _read_capped(path: str, cap: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(cap)


def _read_tail(path: str, cap: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - cap, 0))
        return f.read(cap)
