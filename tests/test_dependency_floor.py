"""The transformers floor in setup.cfg is a version some lane runs: the vLLM lane
(.ci/vllm_lane.sh) installs exactly the floor, and runs the static-cache tests there (the
cache argument before transformers 5.24), while the main venv runs the newest."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def floor(requirement_lines: str, name: str) -> str:
    found = re.search(rf"^\s*{name}>=([\d.]+)\s*$", requirement_lines, re.M)
    assert found, f"no '{name}>=' floor in install_requires"
    return found.group(1)


def test_the_transformers_floor_is_what_the_vllm_lane_installs():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    minimum = floor(cfg["options"]["install_requires"], "transformers")
    lane = (ROOT / ".ci" / "vllm_lane.sh").read_text()
    pins = re.findall(r'"transformers==([\d.]+)"', lane)
    assert pins == [minimum], f"the vLLM lane installs transformers {pins}, setup.cfg's floor is {minimum}"
    assert "tests/test_fast_rollout.py" in lane  # the pre-5.24 static-cache path runs at the floor
    extra = cfg["options.extras_require"]["vllm"]
    assert f"transformers>={minimum}" in extra
