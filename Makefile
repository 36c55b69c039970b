# Two entry points (see README): `make quickstart` trains, `make test` runs the suite.
# Both create .venv on first use, with the CPU build of torch pinned so nothing pulls CUDA wheels.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
THREADS ?= 2

.PHONY: setup quickstart test bench clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

quickstart: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(BIN)/python -m lit_reason.quickstart

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

bench: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(BIN)/python benchmarks/rollout.py

clean:
	rm -rf $(VENV) runs lightning_logs *.egg-info
