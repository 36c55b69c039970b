"""Pieces the GPU check (``benchmarks/gpu_check.py``) and its CUDA tests (``tests/test_cuda.py``)
share. Nothing here imports jsonargparse, bitsandbytes, math-verify, chess or datasets (or the
``datamodules`` package, which needs chess), so it runs on a bare GPU image.

* :class:`ListDataModule`: a fixed list of text problems, batch_size prompts per rollout.
* :func:`instantiate` / :func:`scale_config`: a ``configs/scale/*.yaml`` turned into GRPO arguments
  and Trainer arguments (strategy included) without LightningCLI, shrunk to one device.
* :func:`fp4_kernel_agreement`: Triton bit for bit and torch.compile within a stated tolerance
  against the eager FP4 reference, mismatches counted (:func:`fp4_mismatches`).
* :func:`device_sync`, :func:`reset_peak`, :func:`peak_bytes`: timing and memory on CUDA or CPU.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader

from lit_reason.tasks.problem import TextProblem

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["Write the letter a.", "Say b twice.", "What is 7 + 5?", "Sort 3 1 2.", "Is 17 prime?",
           "Reverse abc.", "Name a vowel.", "2 * 21 = ?"]


def _contains_a(completion: str) -> float:
    return float("a" in completion)


def text_problems(n: int) -> list[TextProblem]:
    return [TextProblem(prompt=PROMPTS[i % len(PROMPTS)], answer="a", verify=_contains_a) for i in range(n)]


class ListDataModule(L.LightningDataModule):
    """``n`` text problems in a fixed order, ``batch_size`` prompts per training batch."""

    def __init__(self, n: int = 64, batch_size: int = 2) -> None:
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(text_problems(self.n), batch_size=self.batch_size, shuffle=False, drop_last=True,
                          collate_fn=list)


def import_object(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def instantiate(spec: Any) -> Any:
    """``{class_path, init_args}`` dicts built recursively, as LightningCLI would; the class names
    listed under ``module_classes`` (FSDP's wrap policy) are imported."""
    if isinstance(spec, list):
        return [instantiate(v) for v in spec]
    if not isinstance(spec, dict):
        return spec
    if "class_path" not in spec:
        return {k: instantiate(v) for k, v in spec.items()}
    kwargs = {k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()}
    if "module_classes" in kwargs:
        kwargs["module_classes"] = {import_object(c) if isinstance(c, str) else c for c in kwargs["module_classes"]}
    return import_object(spec["class_path"])(**kwargs)


def scale_config(name: str, model: str = "tiny", devices: int = 1, **model_overrides: Any) -> tuple[dict, dict]:
    """``(GRPO kwargs, Trainer kwargs)`` of ``configs/scale/<name>.yaml`` on ``devices`` GPUs: its
    strategy, precision and model settings, with a preset ``model`` (no hub) and small sizes."""
    config = yaml.safe_load((ROOT / "configs" / "scale" / f"{name}.yaml").read_text())
    model_args = dict(config["model"]["init_args"])
    model_args.update(model=model, num_generations=2, max_new_tokens=8, micro_batch_size=2, **model_overrides)
    trainer = config["trainer"]
    trainer_args = {"accelerator": trainer.get("accelerator", "gpu"), "devices": devices, "num_nodes": 1,
                    "precision": trainer.get("precision", "32-true"), "strategy": instantiate(trainer["strategy"])}
    return model_args, trainer_args


def fp4_mismatches(out: torch.Tensor, ref: torch.Tensor, scales: torch.Tensor) -> dict:
    """How ``out`` differs from the reference ``ref`` of one FP4 fake-quantization, given the
    reference's block scale per element: elements whose bits differ, those on another grid point
    (off by more than 1e-3 relative: an ulp of the scale is not one), and the largest difference
    in block scales. NaNs agree when both are NaN."""
    agree = (out == ref) | (out.isnan() & ref.isnan())
    diff = torch.where(agree, 0.0, (out.float() - ref.float()).abs()).nan_to_num(nan=float("inf"))
    size = torch.maximum(out.float().abs(), ref.float().abs()).nan_to_num(nan=0.0, posinf=0.0)
    finite = torch.isfinite(ref) & torch.isfinite(out)
    grid = (diff > 1e-3 * size) & finite
    steps = torch.where(finite & (scales > 0), diff / scales.clamp(min=1e-30), 0.0)
    return {"elements": out.numel(), "bits_differ": int((diff > 0).sum()), "grid_mismatches": int(grid.sum()),
            "max_diff_in_block_scales": float(steps.max()) if steps.numel() else 0.0,
            "nonfinite_differ": int(((diff > 0) & ~finite).sum())}


def element_scales(x: torch.Tensor, fmt: str, noise: torch.Tensor | None, mx_scale: str) -> torch.Tensor:
    """The eager reference's decoded block scale of every element of ``x`` (same shape)."""
    from lit_reason.precision import formats

    scales = formats.encode(x, fmt, noise, mx_scale).block_scales
    block = formats.FORMATS[fmt]
    return scales.expand(*scales.shape[:-1], block).reshape(*x.shape[:-1], -1)[..., : x.shape[-1]]


#: the compiled path's tolerance against eager: inductor turns a division by a constant into a
#: multiplication by its reciprocal on GPU, so scales may differ by an ulp and a few elements by a
#: grid point: at most this share of elements on another grid point, never more than 3 block scales
COMPILED_GRID_MISMATCH_SHARE, COMPILED_MAX_BLOCK_SCALES = 1e-3, 3.0


def fp4_kernel_agreement(device: torch.device, rows: int = 256, cols: int = 1000, compiled=None) -> dict:
    """The Triton kernel and the compiled path against the eager reference (NVFP4 and MXFP4,
    nearest and stochastic from the same uniforms, fp32 and bf16, a transposed view; zeros, inf
    and NaN included). Triton must match bit for bit (``triton_mismatches``: elements that differ;
    None where Triton cannot run: no Triton, or CPU without TRITON_INTERPRET=1); the compiled
    path (``compiled``: default ``kernels.compiled_fake_quantize()``) is held to the tolerance
    above, its mismatches counted."""
    import os

    from lit_reason.precision import formats, kernels

    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(rows, cols, device=device, generator=gen) * 3
    x[0, :16] = 0.0
    x[1, 3], x[2, 7] = float("inf"), float("nan")
    cases = [(fmt, mx) for fmt, mx in (("nvfp4", "ocp"), ("mxfp4", "ocp"), ("mxfp4", "no_overflow"))]
    out: dict = {"triton_mismatches": None}
    if kernels.triton_available() and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"):
        from lit_reason.precision import triton_kernels

        bad = 0
        for dtype in (torch.float32, torch.bfloat16):
            for view in (x.to(dtype), x.to(dtype).t()):
                for fmt, mx in cases:
                    block = formats.FORMATS[fmt]
                    r, c = view.shape
                    bits = triton_kernels.uniforms(77, r, -(-c // block) * block, device).reshape(r, -1, block)
                    for stochastic, noise in ((False, None), (True, bits)):
                        got = kernels.triton_fake_quantize(view, fmt, stochastic, 77, mx)
                        ref = formats.fake_quantize(view, fmt, noise, mx)
                        bad += fp4_mismatches(got, ref, element_scales(view, fmt, noise, mx))["bits_differ"]
        out["triton_mismatches"] = bad
    compiled = compiled or kernels.compiled_fake_quantize()
    noise = torch.rand(rows, -(-cols // 16), 16, device=device, generator=gen)
    totals = {"elements": 0, "bits_differ": 0, "grid_mismatches": 0, "max_diff_in_block_scales": 0.0}
    for fmt, u, mx in (("nvfp4", None, "ocp"), ("mxfp4", None, "ocp"), ("nvfp4", noise, "ocp")):
        ref = formats.fake_quantize(x, fmt, u, mx)
        m = fp4_mismatches(compiled(x, fmt, u, mx), ref, element_scales(x, fmt, u, mx))
        for key in ("elements", "bits_differ", "grid_mismatches"):
            totals[key] += m[key]
        totals["max_diff_in_block_scales"] = max(totals["max_diff_in_block_scales"], m["max_diff_in_block_scales"])
    out.update({f"compiled_{k}": v for k, v in totals.items()})
    out["compiled_within_tolerance"] = (totals["grid_mismatches"] <= COMPILED_GRID_MISMATCH_SHARE * totals["elements"]
                                        and totals["max_diff_in_block_scales"] <= COMPILED_MAX_BLOCK_SCALES)
    return out


def device_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> int:
    """Start a peak-memory window; returns the bytes allocated now (None-safe on CPU: 0)."""
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_bytes(device: torch.device) -> int | None:
    """Peak bytes allocated since :func:`reset_peak` (CUDA); None on CPU, where the caching
    allocator's figure does not exist (benchmarks/memory.py measures CPU memory)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)
