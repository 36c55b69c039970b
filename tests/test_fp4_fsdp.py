"""FP4FSDPPrecision under FSDP2 (Lightning's ModelParallelStrategy) on 2 CPU gloo ranks.

ModelParallelStrategy calls convert_module after fully_shard: the plugin converts the modules in
place, so a Linear that fully_shard wrapped itself (class FSDPLinear) and one inside a sharded
parent both become FP4 layers that FSDP still gathers. With the gradient operands unquantized
(deterministic FP4: nearest x and W), 2 ranks on the same batch must end where 1 process does.
FSDP1 (FSDPStrategy) refuses a CPU accelerator in Lightning, so it is only checked for
acceptance of the plugin (tests/test_fp4_plugin.py) and in benchmarks/fp4.py:gpu_checks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("fsdp2_fp4_worker.py")


def run(tmp_path, mode):
    out = tmp_path / f"{mode}.json"
    proc = subprocess.run([sys.executable, str(WORKER), str(out), mode], cwd=WORKER.parent.parent,
                          capture_output=True, text=True, timeout=400, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_fsdp2_model_parallel_strategy_trains_fp4_like_one_process(tmp_path):
    sharded, single = run(tmp_path, "fsdp2"), run(tmp_path, "single")
    assert sharded["classes"] == ["FSDPFP4Linear", "ReLU", "FP4Linear"]
    assert sharded["fp4_layers"] == single["fp4_layers"] == ["net.0", "net.2"]
    diffs = [abs(a - b) for a, b in zip(sharded["weights"], single["weights"])]
    assert len(diffs) == len(single["weights"]) and max(diffs) < 1e-5
    assert len(sharded["ratios"]) == 3 and all(r > 0 for r in sharded["ratios"])
