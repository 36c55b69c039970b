"""CUDA paths that CPU CI cannot run (``-m cuda``; skipped without a GPU). The checks themselves
are plain functions in ``benchmarks/cuda_checks.py``, which ``make gpu-check`` runs without pytest;
these tests wrap them. The last test runs on CPU too: the scale configs still build into Trainer
arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import cuda_checks  # noqa: E402
from gpu_check_support import scale_config  # noqa: E402

CUDA = torch.device("cuda")
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def cuda_test(fn):
    for mark in needs_cuda:
        fn = mark(fn)
    return fn


@cuda_test
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_compiled_static_engine_equals_the_uncompiled_one_on_cuda(temperature):
    cuda_checks.static_engine_tokens(CUDA, temperature)


@cuda_test
def test_static_engine_decode_step_compiles_once_on_cuda():
    cuda_checks.static_engine_compiles_once(CUDA)


@cuda_test
def test_bf16_grpo_training_step_on_cuda():
    cuda_checks.bf16_grpo_step(CUDA)


@cuda_test
def test_fp4_triton_exact_and_compiled_within_tolerance_on_cuda():
    cuda_checks.fp4_kernels(CUDA)


@cuda_test
@pytest.mark.parametrize("max_grad_norm", [None, 0.0])
def test_fsdp_step_of_the_scale_config_on_one_gpu(max_grad_norm):
    """As written (max_grad_norm=1.0, clipped by the FSDP root's own ``clip_grad_norm_``) and off."""
    cuda_checks.scale_step("fsdp", **({} if max_grad_norm is None else {"max_grad_norm": max_grad_norm}))


@cuda_test
def test_deepspeed_zero2_step_on_one_gpu():
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed to run this)")
    cuda_checks.scale_step("deepspeed_zero2")


def test_static_engine_checks_run_on_cpu():
    """The same check functions on CPU (static path uncompiled, eager-backend compile count)."""
    cpu = torch.device("cpu")
    assert cuda_checks.static_engine_tokens(cpu, 1.0)["tokens"] > 0
    assert cuda_checks.static_engine_compiles_once(cpu)["unique_graphs"] == 1


def test_scale_configs_build_into_trainer_arguments():
    """Runs everywhere: the YAMLs the CUDA steps use still parse into a strategy and GRPO arguments."""
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    model_args, trainer_args = scale_config("fsdp")
    strategy = trainer_args["strategy"]
    assert isinstance(strategy, FSDPStrategy) and trainer_args["devices"] == 1
    assert Qwen2DecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes
    assert trainer_args["precision"] == "bf16-true" and model_args["model"] == "tiny" and model_args["beta"] == 0.04
    _, ds_args = scale_config("deepspeed_zero2")
    assert ds_args["strategy"] == "deepspeed_stage_2"
