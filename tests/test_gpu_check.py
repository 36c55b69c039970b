"""The GPU check (benchmarks/gpu_check.py) on CPU: it runs on an image that lacks jsonargparse,
bitsandbytes, math-verify, chess, datasets and pytest (those imports are made to fail by a
meta-path finder installed through sitecustomize in the subprocess), writes every section's result
the moment it finishes (a run killed part-way leaves every finished section's JSON), keeps to its
time budget, counts "not run" as a failure on a GPU and stops on a failed preflight in one line."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MISSING = ("jsonargparse", "bitsandbytes", "math_verify", "chess", "datasets", "pytest")
BLOCKER = f"""
import importlib.abc, sys
MISSING = {MISSING!r}
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not on the GPU image)")
        return None
sys.meta_path.insert(0, _Missing())
"""


def blocked_env(tmp_path: Path) -> dict:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH", "")) if p)
    return env


def run(args, env, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_gpu_check_path_imports_without_the_missing_packages(tmp_path):
    code = ("import sys; sys.path.insert(0, 'benchmarks')\n"
            "import gpu_check, gpu_check_support, cuda_checks, lit_reason.modules, lit_reason.rollout, "
            "lit_reason.precision.kernels\n"
            "for name in " + repr(MISSING) + ":\n"
            "    try:\n        __import__(name)\n    except ImportError:\n        continue\n"
            "    raise SystemExit(f'{name} was not blocked')\n")
    proc = run(["-c", code], blocked_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]


LINE = re.compile(r"^\[gpu-check\] (\w+): (.+?) \([\d.]+ s\)")


def finished_lines(stdout: str) -> dict[str, str]:
    """``{section: status}`` of every ``[gpu-check] name: status (s)`` line printed."""
    return {m.group(1): m.group(2) for m in map(LINE.match, stdout.splitlines()) if m}


def test_cpu_mode_writes_each_section_and_its_figures(tmp_path):
    out = tmp_path / "out"
    sections = ["static_engine_sampled", "rollout", "grpo_step", "bf16_grpo_step"]
    proc = run(["benchmarks/gpu_check.py", "--device", "cpu", "--out", str(out), "--sections", *sections],
               blocked_env(tmp_path))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    env = json.loads((out / "environment.json").read_text())
    assert env["device"] == "cpu" and not any(env["optional"][m] for m in MISSING)
    printed = finished_lines(proc.stdout)
    assert set(printed) == {"preflight", *sections}
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in printed}
    assert all(results[n]["status"] == status for n, status in printed.items())
    assert results["bf16_grpo_step"]["status"] == "skipped: needs CUDA"  # not a failure on CPU
    assert results["static_engine_sampled"]["tokens"] > 0  # ran without pytest
    rollout = results["rollout"]
    assert rollout["rows"] == 8 and rollout["static_tokens_per_s"] > 0 and rollout["generate_tokens_per_s"] > 0
    assert math.isclose(rollout["ratio"], rollout["static_tokens_per_s"] / rollout["generate_tokens_per_s"], rel_tol=1e-2)
    step = results["grpo_step"]
    runs = [step[k] for k in ("chunked", "full", "default") if k in step]
    assert runs and all(r["step_s"] > 0 and r["peak_bytes"] is None for r in runs)  # no CUDA allocator on CPU
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["statuses"] == {n: results[n]["status"] for n in sections}


def test_a_run_killed_part_way_leaves_every_finished_section(tmp_path):
    """SIGKILL once the second section's line is out: every section whose line was printed has
    its JSON (same status), every JSON there parses, and there is no summary (it never finished)."""
    out = tmp_path / "out"
    sections = ["static_engine_greedy", "static_engine_sampled", "rollout", "grpo_step"]
    proc = subprocess.Popen([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--out", str(out),
                             "--sections", *sections], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines, deadline = [], time.monotonic() + 240
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[gpu-check] static_engine_sampled:") or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    printed = finished_lines("".join(lines))
    assert {"preflight", "static_engine_greedy", "static_engine_sampled"} <= set(printed)
    for name, status in printed.items():
        assert json.loads((out / f"{name}.json").read_text())["status"] == status
    for path in out.glob("*.json"):
        json.loads(path.read_text())
    assert not (out / "summary.json").exists() and not (out / "grpo_step.json").exists()


def test_budget_skips_what_cannot_finish_and_not_run_fails(tmp_path):
    out = tmp_path / "out"
    proc = run(["benchmarks/gpu_check.py", "--device", "cpu", "--out", str(out), "--budget", "5", "--no-preflight",
                "--sections", "static_engine_greedy", "rollout"], dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 1
    for name in ("static_engine_greedy", "rollout"):
        assert json.loads((out / f"{name}.json").read_text())["status"].startswith("not run: budget")
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["ok"] and summary["failed_or_not_run"] == ["rollout", "static_engine_greedy"]
    assert "FAILED: rollout, static_engine_greedy" in proc.stdout


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    return gpu_check


def test_a_section_past_the_budget_is_interrupted(gpu_check):
    section = gpu_check.Section("slow", "figures", (0, 0), lambda: time.sleep(5) or {})
    start = time.perf_counter()
    result = gpu_check.run_section(section, torch.device("cpu"), deadline=time.perf_counter() + 0.3)
    assert result["status"].startswith("failed: ran past the budget") and time.perf_counter() - start < 3


def test_on_a_gpu_what_did_not_run_is_a_failure(gpu_check):
    cuda = torch.device("cuda")  # nothing runs on it: each section stops before its body
    far = time.perf_counter() + 100
    missing = gpu_check.Section("x", "correctness", (1, 1), lambda: {}, needs=("not_a_module_here",))
    assert gpu_check.run_section(missing, cuda, far)["status"] == "not run: not_a_module_here not installed"
    optional = gpu_check.Section("deepspeed_zero2_step", "correctness", (1, 1), lambda: {}, needs=("not_a_module_here",))
    assert gpu_check.run_section(optional, cuda, far)["status"].startswith("n/a")
    skipped = gpu_check.Section("y", "correctness", (1, 1), lambda: {"status": "skipped: something"})
    assert gpu_check.run_section(skipped, cuda, far)["status"] == "not run: skipped: something"
    cpu_only_skip = gpu_check.Section("z", "correctness", (1, 1), lambda: {}, cuda_only=True)
    assert gpu_check.run_section(cpu_only_skip, torch.device("cpu"), far)["status"] == "skipped: needs CUDA"
    assert [gpu_check.counts_as_failure(s) for s in ("not run: budget", "failed: x", "skipped: needs CUDA",
                                                     "n/a: deepspeed not installed", "passed")] == [
        True, True, False, False, False]


def test_a_failed_preflight_stops_in_one_line(gpu_check, monkeypatch, tmp_path, capsys):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    monkeypatch.setattr(gpu_check.torch, "compile", no_compiler)
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path)]) == 2
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[gpu-check] preflight")]
    assert len(printed) == 1 and "C compiler" in printed[0] and "build-essential" in printed[0]
    result = json.loads((tmp_path / "preflight.json").read_text())
    assert result["status"].startswith("failed: RuntimeError") and not (tmp_path / "summary.json").exists()


def test_cli_section_without_its_wheels_is_not_run(tmp_path):
    out = tmp_path / "out"
    proc = run(["benchmarks/gpu_check.py", "--device", "cpu", "--out", str(out), "--no-preflight",
                "--sections", "cli"], blocked_env(tmp_path))
    assert proc.returncode == 1
    assert json.loads((out / "cli.json").read_text())["status"] == "not run: jsonargparse, chess not installed"


def test_the_commands_in_the_docs_parse(gpu_check):
    """Every gpu_check.py / make gpu-check command in docs/gpu_check.md parses with the script's
    own parser, and names only sections that exist."""
    import shlex

    text = (ROOT / "docs" / "gpu_check.md").read_text()
    commands = [line.strip() for line in text.splitlines() if "benchmarks/gpu_check.py" in line
                and line.startswith("    ") or line.strip().startswith("make gpu-check GPU_CHECK_ARGS=")]
    assert len(commands) >= 5
    names = {s.name for s in gpu_check.sections(torch.device("cpu"), gpu_check.SIZES["cpu"])}
    for command in commands:
        words = shlex.split(command.replace("$OUT", "/tmp/out"))
        args = shlex.split(words[2].split("=", 1)[1]) if words[0] == "make" else words[2:]
        parsed = gpu_check.build_parser().parse_args(args)
        assert set(parsed.sections or ()) <= names
        if parsed.part != "all" and "$OUT" in command:  # a call of the plan: its estimates fit its budget
            cuda = [s.estimate[0] for s in gpu_check.sections(torch.device("cuda"), gpu_check.SIZES["cuda"])
                    if s.part == parsed.part and s.name not in gpu_check.OPTIONAL_SECTIONS]
            assert 10 + sum(cuda) <= parsed.budget, (parsed.part, sum(cuda))
    reruns = re.findall(r"`(--sections [\w ]+)`", text)
    assert reruns and all(set(r.split()[1:]) <= names for r in reruns)


def test_a_preflight_that_hangs_stops_in_one_line(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_check.torch, "compile", lambda *a, **k: time.sleep(10))
    start = time.perf_counter()
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--preflight-timeout", "0.5"]) == 2
    assert time.perf_counter() - start < 5
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[gpu-check] preflight")]
    assert len(printed) == 1 and "OverBudget" in printed[0] and "--preflight-timeout" in printed[0]
