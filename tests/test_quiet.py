"""Known-harmless library messages are silenced by name; everything else still shows."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lit_reason.utils.quiet import quiet_known_warnings

REPO = Path(__file__).resolve().parent.parent
#: What a newcomer's terminal showed before (issue 19): none of it may appear.
KNOWN_NOISE = ["LightningCLI's args parameter", "💡 Tip", "litlogger", "module(s) in eval mode", "LeafSpec",
               "GPU available: False", "TPU available: False", "Loading weights", "Writing model shards"]


def test_only_the_named_messages_are_dropped(caplog):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_known_warnings()
        warnings.warn("Found 66 module(s) in eval mode at the start of training. This may ...", UserWarning)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
        warnings.warn("Found 66 modules that are not harmless", UserWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in seen] == ["Found 66 modules that are not harmless", "something else is deprecated"]
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        log.info("💡 Tip: try installing a cloud logger")
        log.info("GPU available: False, used: False")
        log.info("GPU available: True (cuda), used: True")
        log.info("`Trainer.fit` stopped: `max_steps=3` reached.")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: True (cuda), used: True", "`Trainer.fit` stopped: `max_steps=3` reached."]


@pytest.mark.slow
def test_a_short_quickstart_prints_none_of_the_known_noise(tmp_path):
    """Also the --baseline stage's code path (its continued SFT lasts as long as the 1-step RL run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run(
        [sys.executable, "-m", "lit_reason.app.quickstart", "--out", str(tmp_path / "qs"), "--sft-steps", "2", "--rl-steps", "1",
         "--extra", "eval:--data.init_args.eval_per_task=4", "--extra", "rl:--model.init_args.num_generations=2", "--baseline"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = done.stdout + done.stderr
    assert [n for n in KNOWN_NOISE if n in shown] == [], done.stderr[-3000:]
    assert "| seed | held-out items | after SFT | after GRPO |" in done.stdout
    # --baseline: the warm-up continued for GRPO's wall time, scored on the same 4 items
    assert "| seed | after SFT | SFT continued for GRPO's time | after GRPO |" in done.stdout
    assert "Time limit reached" in done.stderr and (tmp_path / "qs" / "seed0" / "sft_more_policy" / "model.safetensors").is_file()
