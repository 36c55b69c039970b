"""Pieces the GPU check (``benchmarks/gpu_check.py``) and its CUDA tests (``tests/test_cuda.py``)
share. Nothing here imports jsonargparse, bitsandbytes, math-verify, chess or datasets (or the
``datamodules`` package, which needs chess), so it runs on a bare GPU image.

* :class:`ListDataModule`: a fixed list of text problems, batch_size prompts per rollout.
* :func:`instantiate` / :func:`scale_config`: a ``configs/scale/*.yaml`` turned into GRPO arguments
  and Trainer arguments (strategy included) without LightningCLI, shrunk to one device.
* :func:`fp4_compiled_matches_eager`: the minimal FP4 check (the FP4 work extends it).
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


def fp4_compiled_matches_eager(device: torch.device) -> dict[str, bool]:
    """FP4 fake quantization through ``torch.compile`` equals the eager reference bit for bit
    (nearest NVFP4 / MXFP4 and stochastic NVFP4 from the same noise)."""
    from lit_reason.precision import formats
    from lit_reason.precision.kernels import compiled_fake_quantize

    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(64, 100, device=device, generator=gen) * 3
    noise = torch.rand(64, 7, 16, device=device, generator=gen)
    compiled = compiled_fake_quantize()
    results = {}
    for fmt, u in [("nvfp4", None), ("mxfp4", None), ("nvfp4", noise)]:
        key = f"{fmt}/{'stochastic' if u is not None else 'nearest'}"
        results[key] = bool(torch.equal(compiled(x, fmt, u, "ocp"), formats.fake_quantize(x, fmt, u, "ocp")))
    return results


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
