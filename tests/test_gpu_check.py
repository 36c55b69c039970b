"""The GPU check's CPU mode runs end to end on an image that lacks jsonargparse, bitsandbytes,
math-verify, chess and datasets (as the bare GPU machine does): those imports are made to fail
by a meta-path finder installed through sitecustomize in the subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MISSING = ("jsonargparse", "bitsandbytes", "math_verify", "chess", "datasets")
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
            "import gpu_check_support, lit_reason.modules, lit_reason.rollout, lit_reason.precision.kernels, callbacks\n"
            "for name in " + repr(MISSING) + ":\n"
            "    try:\n        __import__(name)\n    except ImportError:\n        continue\n"
            "    raise SystemExit(f'{name} was not blocked')\n")
    proc = run(["-c", code], blocked_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_cpu_mode_runs_and_writes_its_figures(tmp_path):
    out = tmp_path / "figures.json"
    proc = run(["benchmarks/gpu_check.py", "--device", "cpu", "--json", str(out)], blocked_env(tmp_path))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    figures = json.loads(out.read_text())
    assert figures["ok"] and figures["environment"]["device"] == "cpu"
    assert not any(figures["environment"]["optional"][m] for m in MISSING)
    tests = figures["cuda_tests"]["tests"]  # collected and skipped here: the CUDA tests need a GPU
    assert len(tests) >= 6 and all(t["outcome"] == "skipped" for t in tests.values())
    rollout = figures["rollout"]
    assert rollout["rows"] == 8 and rollout["static_tokens_per_s"] > 0 and rollout["generate_tokens_per_s"] > 0
    assert math.isclose(rollout["ratio"], rollout["static_tokens_per_s"] / rollout["generate_tokens_per_s"], rel_tol=1e-2)
    step = figures["grpo_step"]
    runs = [step[k] for k in ("chunked", "full", "default") if k in step]
    assert runs and all(r["step_s"] > 0 and r["peak_bytes"] is None for r in runs)  # no CUDA allocator on CPU
    assert figures["cli"]["status"].startswith("skipped: jsonargparse, chess not installed")
    assert "GPU check" in proc.stdout and "rollout ratio static / generate" in proc.stdout
