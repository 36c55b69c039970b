"""CUDA paths that CPU CI cannot run (``-m cuda``; skipped without a GPU; ``make gpu-check`` runs
them): the static-cache engine against the plain engine, a bf16 GRPO step, FP4 compiled against
eager, one FSDP step of ``configs/scale/fsdp.yaml`` and one DeepSpeed ZeRO-2 step on one device.

Imports nothing a bare GPU image lacks (see benchmarks/gpu_check_support.py). The last test runs
on CPU too: it checks that the scale configs still build into Trainer arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from gpu_check_support import ListDataModule, fp4_compiled_matches_eager, scale_config  # noqa: E402

from lit_reason.modules import GRPO  # noqa: E402
from lit_reason.models.policy import load_policy  # noqa: E402
from lit_reason.rollout import RolloutEngine, SamplingConfig  # noqa: E402
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine  # noqa: E402

CUDA = torch.device("cuda")
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0, limit_val_batches=0)


def cuda_policy(dtype: str = "float32"):
    torch.manual_seed(0)
    loaded = load_policy("tiny", dtype=dtype)
    return loaded.model.to(CUDA).eval(), loaded.tokenizer


def cuda_prompts(tok, group: int = 4):
    enc = tok(["Write the letter a.", "bcd", "Is 17 prime? Say yes or no."], return_tensors="pt", padding=True)
    return enc.input_ids.repeat_interleave(group, 0).to(CUDA), enc.attention_mask.repeat_interleave(group, 0).to(CUDA)


def weights_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    return max(float((after[k] - before[k]).abs().max()) for k in before if k in after)


def _static_vs_plain(temperature: float) -> None:
    """Compiled (CUDA-graph) static path vs the plain engine: same tokens, log-probs within 1e-4."""
    model, tok = cuda_policy()
    cfg = SamplingConfig(max_new_tokens=32, temperature=temperature)
    ids, mask = cuda_prompts(tok)
    static = StaticCacheRolloutEngine(model, tok, cfg)  # compiles on CUDA by default
    gen = (lambda: torch.Generator(device=CUDA).manual_seed(7)) if temperature > 0 else (lambda: None)
    fast = static.generate(ids, mask, gen())
    again = static.generate(ids, mask, gen())  # graph replay, cache reset between rollouts
    plain = RolloutEngine(model, tok, cfg)
    plain.compact_finished_rows = False  # compaction changes which rows the sampler draws for
    ref = plain.generate(ids, mask, gen())
    for out in (fast, again):
        assert torch.equal(out.completion_ids, ref.completion_ids)
        assert torch.equal(out.completion_mask, ref.completion_mask)
        assert out.texts == ref.texts
        torch.testing.assert_close(out.logprobs, ref.logprobs, atol=1e-4, rtol=0)


def _bf16_step() -> None:
    L.seed_everything(0)
    module = GRPO(model="tiny", dtype="bfloat16", num_generations=4, max_new_tokens=16, lr=1e-3,
                  prompt_format="plain", beta=0.04)
    assert isinstance(module.engine, StaticCacheRolloutEngine)
    before = weights_of(module.policy)
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-true", max_steps=2, **QUIET)
    trainer.fit(module, ListDataModule(n=8, batch_size=2))
    assert trainer.global_step == 2
    assert next(module.policy.parameters()).dtype == torch.bfloat16
    assert next(module.policy.parameters()).device.type == CUDA.type
    assert moved(before, weights_of(module.policy)) > 0
    assert all(torch.isfinite(p).all() for p in module.policy.parameters())


def _fp4() -> None:
    results = fp4_compiled_matches_eager(CUDA)
    assert all(results.values()), results


def _scale_step(name: str, **overrides) -> None:
    """One optimizer step of a configs/scale/ YAML on one GPU, its strategy and precision as written."""
    model_args, trainer_args = scale_config(name, **overrides)
    L.seed_everything(0)
    module = GRPO(**model_args, prompt_format="plain")
    trainer = L.Trainer(max_steps=1, **trainer_args, **QUIET)
    trainer.fit(module, ListDataModule(n=8, batch_size=2))
    assert trainer.global_step == 1
    assert all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_static_cache_engine_equals_plain_engine_on_cuda(temperature):
    _static_vs_plain(temperature)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_grpo_training_step_on_cuda():
    _bf16_step()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp4_compiled_equals_eager_on_cuda():
    _fp4()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("max_grad_norm", [None, 0.0])
def test_fsdp_step_of_the_scale_config_on_one_gpu(max_grad_norm):
    """As written (GRPO's default max_grad_norm=1.0: clipped by the FSDP root's own
    ``clip_grad_norm_``, since Lightning's FSDPPrecision refuses norm clipping; see
    ``GRPO.clip_grad_norm``), and with clipping off."""
    _scale_step("fsdp", **({} if max_grad_norm is None else {"max_grad_norm": max_grad_norm}))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deepspeed_zero2_step_on_one_gpu():
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed to run this)")
    _scale_step("deepspeed_zero2")


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
