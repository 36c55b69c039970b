"""The CUDA correctness checks as plain functions: ``benchmarks/gpu_check.py`` runs them without
pytest (a bare GPU image may lack it) and ``tests/test_cuda.py`` wraps them for ``pytest -m cuda``.

Each check returns a dict of what it measured and raises ``AssertionError`` when a property fails.
Imports nothing a bare GPU image lacks (see gpu_check_support.py).
"""

from __future__ import annotations

import time

import lightning as L
import torch

from gpu_check_support import ListDataModule, fp4_kernel_agreement, scale_config
from lit_reason.modules import GRPO
from lit_reason.models.policy import load_policy
from lit_reason.rollout import RolloutEngine, SamplingConfig
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0, limit_val_batches=0)
PROMPTS = ["Write the letter a.", "bcd", "Is 17 prime? Say yes or no."]


def tiny_policy(device: torch.device, dtype: str = "float32"):
    torch.manual_seed(0)
    loaded = load_policy("tiny", dtype=dtype)
    return loaded.model.to(device).eval(), loaded.tokenizer


def encoded(tok, device: torch.device, texts=PROMPTS, group: int = 4):
    enc = tok(list(texts), return_tensors="pt", padding=True)
    return enc.input_ids.repeat_interleave(group, 0).to(device), enc.attention_mask.repeat_interleave(group, 0).to(device)


def weights_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    return max(float((after[k] - before[k]).abs().max()) for k in before if k in after)


def static_engine_tokens(device: torch.device, temperature: float) -> dict:
    """The compiled static engine (CUDA graphs) gives the UNCOMPILED static engine's tokens, masks
    and texts, twice in a row (graph replay, cache reset), and log-probs within 1e-4. The same
    engine uncompiled is the reference: a different kernel order (the plain engine's growing cache)
    may flip a near-tie; agreement with the plain engine is reported, not asserted."""
    model, tok = tiny_policy(device)
    cfg = SamplingConfig(max_new_tokens=32, temperature=temperature)
    ids, mask = encoded(tok, device)
    gen = (lambda: torch.Generator(device=device).manual_seed(7)) if temperature > 0 else (lambda: None)
    compiled = StaticCacheRolloutEngine(model, tok, cfg, static_on=(device.type,), compile=device.type == "cuda")
    eager = StaticCacheRolloutEngine(model, tok, cfg, static_on=(device.type,), compile=False)
    runs = [compiled.generate(ids, mask, gen()), compiled.generate(ids, mask, gen())]
    ref = eager.generate(ids, mask, gen())
    for out in runs:
        assert torch.equal(out.completion_ids, ref.completion_ids), "compiled static engine: other tokens"
        assert torch.equal(out.completion_mask, ref.completion_mask) and out.texts == ref.texts
        torch.testing.assert_close(out.logprobs, ref.logprobs, atol=1e-4, rtol=0)
    plain = RolloutEngine(model, tok, cfg)
    plain.compact_finished_rows = False  # compaction changes which rows the sampler draws for
    other = plain.generate(ids, mask, gen())
    width = min(other.completion_ids.shape[1], ref.completion_ids.shape[1])
    same = (other.completion_ids[:, :width] == ref.completion_ids[:, :width]).float().mean()
    return {"rows": int(ids.shape[0]), "tokens": int(ref.completion_mask.sum()),
            "plain_engine_token_agreement": round(float(same), 4)}


def static_engine_compiles_once(device: torch.device) -> dict:
    """Prompts of three lengths in batches of 12, 4 and 8 rows: the decode step compiles once
    (Dynamo's counters), so it never reaches the recompile limit where it silently runs eagerly."""
    from torch._dynamo.utils import counters

    model, tok = tiny_policy(device)
    cfg = SamplingConfig(max_new_tokens=16, temperature=1.0)
    engine = StaticCacheRolloutEngine(model, tok, cfg, static_on=(device.type,), max_prompt_length=64,
                                      compile=True, compile_backend="inductor" if device.type == "cuda" else "eager")
    torch._dynamo.reset()
    counters.clear()
    for texts in (PROMPTS, ["a"], ["bc", "Sort 3 1 2, then say done."]):
        engine.generate(*encoded(tok, device, texts), torch.Generator(device=device).manual_seed(1))
    graphs = int(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert graphs == 1, f"the decode step compiled {graphs} graphs (expected 1)"
    return {"unique_graphs": graphs, "cache_rows_x_positions": list(engine._cache_key[:2])}


def bf16_grpo_step(device: torch.device) -> dict:
    """Two bf16 GRPO steps (bf16-true, KL reference, static engine): weights move, stay bf16, finite."""
    L.seed_everything(0, verbose=False)
    module = GRPO(model="tiny", dtype="bfloat16", num_generations=4, max_new_tokens=16, lr=1e-3,
                  prompt_format="plain", beta=0.04)
    assert isinstance(module.engine, StaticCacheRolloutEngine)
    before = weights_of(module.policy)
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-true", max_steps=2, **QUIET)
    trainer.fit(module, ListDataModule(n=8, batch_size=2))
    assert trainer.global_step == 2
    params = list(module.policy.parameters())
    assert params[0].dtype == torch.bfloat16 and params[0].device.type == "cuda"
    change = moved(before, weights_of(module.policy))
    assert change > 0 and all(torch.isfinite(p).all() for p in params)
    return {"steps": 2, "max_weight_change": change}


def fp4_kernels(device: torch.device) -> dict:
    """Triton kernel bit-exact against eager; torch.compile within its stated tolerance."""
    result = fp4_kernel_agreement(device)
    assert result["triton_mismatches"] in (0, None), result
    assert result["compiled_within_tolerance"], result
    return result


def scale_step(name: str, **overrides) -> dict:
    """One optimizer step of a configs/scale/ YAML on one GPU, its strategy and precision as written;
    a sharded strategy samples with the plain engine."""
    model_args, trainer_args = scale_config(name, **overrides)
    L.seed_everything(0, verbose=False)
    module = GRPO(**model_args, prompt_format="plain")
    trainer = L.Trainer(max_steps=1, **trainer_args, **QUIET)
    start = time.perf_counter()
    trainer.fit(module, ListDataModule(n=8, batch_size=2))
    fit_s = time.perf_counter() - start
    assert trainer.global_step == 1
    assert all(torch.isfinite(p).all() for p in module.parameters())
    if name.startswith("fsdp"):
        assert type(module.engine) is RolloutEngine, f"{name}: sampled with {type(module.engine).__name__}"
    return {"steps": 1, "fit_s": round(fit_s, 2), "engine": type(module.engine).__name__}
