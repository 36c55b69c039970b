#!/usr/bin/env bash
# Download the few small pure-Python wheels the bare GPU image lacks (Python 3.12; it already has
# torch, lightning, transformers, PyYAML, sympy, packaging, typing_extensions) into a folder to
# carry to the offline GPU machine (only the GPU check's `cli` section needs them; the CUDA checks
# need no pytest). Size measured in docs/gpu_check.md. On the GPU machine, `make gpu-check` installs them
# from that folder with --no-index into .gpu_check_site/ (nothing else in the image changes).
#   bash benchmarks/gpu_check_wheels.sh [DEST=benchmarks/wheels]
# bitsandbytes (8-bit optimizers, quantized reference) and datasets (hub math data) are NOT
# carried: large, and nothing the GPU check runs needs them; deepspeed neither (its ZeRO-2 test
# skips with a printed reason unless the image has it).
set -euo pipefail
DEST="${1:-benchmarks/wheels}"
PYVER="${GPU_PYTHON_VERSION:-3.12}"
PIP="${PIP:-python3 -m pip}"
mkdir -p "$DEST"
# --no-deps with the closure listed by hand: the resolver would demand PyYAML, which has no
# pure-Python wheel (the image has it).
$PIP download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation py --abi none \
    --platform any --dest "$DEST" \
    "jsonargparse[signatures]==4.53.0" "docstring_parser==0.18.0" "typeshed_client==2.15.0" \
    "math-verify==0.9.0" "latex2sympy2_extended==1.11.0" "antlr4-python3-runtime==4.13.2"
# python-chess 1.11 ships only a source archive: build its (pure-Python) wheel here
$PIP wheel --no-deps --wheel-dir "$DEST" "chess==1.11.2"
du -sh "$DEST"
ls "$DEST"
