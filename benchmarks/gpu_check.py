"""The GPU check: one command that runs every CUDA code path once and prints the GPU figures.

    python benchmarks/gpu_check.py                 # on one CUDA GPU (~5 min on an H100/H200 class GPU)
    python benchmarks/gpu_check.py --device cpu    # small sizes, < 1 min: keeps the script from rotting

1. ``pytest -m cuda tests/test_cuda.py``: static-cache engine == plain engine, a bf16 GRPO step,
   FP4 compiled == eager, one FSDP step of configs/scale/fsdp.yaml and (if deepspeed imports) one
   ZeRO-2 step, all on one device (skipped on CPU).
2. Rollout tokens/s of the static-cache engine against ``model.generate`` (same model, prompts and
   sampling; 0.5B-shaped preset, 64 rows x 256 tokens on CUDA), as a ratio.
3. GRPO step time and peak memory with ``chunked_lm_head`` on against off (bf16, 0.5B on CUDA), as
   ratios; the rollout uses the plain engine here so only the loss path differs.
4. FP4 figures from ``benchmarks/fp4.py:gpu_checks(device)`` when that function exists.
5. A one-step ``lit-reason fit`` of configs/grpo/toy_char_fill.yaml when jsonargparse and chess
   import (carry them with benchmarks/gpu_check_wheels.sh; see docs/gpu_check.md).

Prints a summary table and writes the figures as JSON (``--json``). Exit status 1 if a test or a
section failed. Needs only torch, lightning, transformers, PyYAML (and pytest for step 1).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from gpu_check_support import PROMPTS, ListDataModule, device_sync, peak_bytes, reset_peak  # noqa: E402
from lit_reason.modules import GRPO  # noqa: E402
from lit_reason.models.policy import load_policy  # noqa: E402
from lit_reason.rollout import SamplingConfig  # noqa: E402
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine  # noqa: E402

SIZES = {
    "cuda": dict(preset="qwen2-0.5b-shape", dtype="bfloat16", prompts=8, group=8, new_tokens=256, repeats=2,
                 step_prompts=2, step_group=8, step_new_tokens=256, micro_batch=8, steps=2),
    "cpu": dict(preset="tiny", dtype="float32", prompts=2, group=4, new_tokens=16, repeats=2,
                step_prompts=2, step_group=4, step_new_tokens=16, micro_batch=4, steps=1),
}
OPTIONAL = ("jsonargparse", "chess", "math_verify", "datasets", "bitsandbytes", "deepspeed", "triton", "pytest", "peft")
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0, limit_val_batches=0)


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def environment(device: torch.device) -> dict:
    import lightning
    import transformers

    env = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "python": sys.version.split()[0],
           "torch": torch.__version__, "lightning": lightning.__version__, "transformers": transformers.__version__,
           "device": device.type, "optional": {m: has(m) for m in OPTIONAL}}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    else:
        env["cpu_threads"] = torch.get_num_threads()
    return env


# ------------------------------------------------------------------ 1. the CUDA tests
def cuda_tests(timeout_s: int) -> dict:
    """``pytest -m cuda`` in a subprocess; outcome per test from its JUnit XML."""
    if not has("pytest"):
        return {"status": "not run: pytest is not installed (carry it: benchmarks/gpu_check_wheels.sh)"}
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "cuda.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={xml}", "tests/test_cuda.py"]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"status": f"failed: pytest ran past {timeout_s} s"}
        results = {}
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                outcome, detail = "passed", ""
                for tag in ("failure", "error", "skipped"):
                    node = case.find(tag)
                    if node is not None:
                        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                        detail = (node.get("message") or "").splitlines()[0][:160] if node.get("message") else ""
                results[case.get("name")] = {"outcome": outcome, "detail": detail, "seconds": float(case.get("time", 0))}
    failed = [n for n, r in results.items() if r["outcome"] in ("failed", "error")]
    status = "passed" if proc.returncode in (0, 5) and not failed else "failed"
    out = {"status": status, "returncode": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
           "tests": results}
    if status == "failed":
        out["output_tail"] = (proc.stdout + proc.stderr)[-4000:]
    return out


# ------------------------------------------------------------------ 2. rollout throughput
def _count_until_eos(completion: torch.Tensor, eos_id: int) -> int:
    is_eos = (completion == eos_id).long()
    return int(((is_eos.cumsum(-1) - is_eos) == 0).sum())  # tokens up to and including the first EOS


def rollout_benchmark(device: torch.device, preset: str, dtype: str, prompts: int, group: int, new_tokens: int,
                      repeats: int, **_) -> dict:
    """Static-cache engine (compiled on CUDA) against ``model.generate``, alternating runs."""
    torch.manual_seed(0)
    loaded = load_policy(preset, dtype=dtype)
    model, tok = loaded.model.to(device).eval(), loaded.tokenizer
    enc = tok([PROMPTS[i % len(PROMPTS)] for i in range(prompts)], return_tensors="pt", padding=True)
    ids = enc.input_ids.repeat_interleave(group, 0).to(device)
    mask = enc.attention_mask.repeat_interleave(group, 0).to(device)
    engine = StaticCacheRolloutEngine(model, tok, SamplingConfig(max_new_tokens=new_tokens, temperature=1.0),
                                      static_on=(device.type,))

    def static_run(seed: int) -> tuple[int, float]:
        gen = torch.Generator(device=device).manual_seed(seed)
        device_sync(device)
        start = time.perf_counter()
        rollout = engine.generate(ids, mask, gen)
        device_sync(device)
        return rollout.num_tokens, time.perf_counter() - start

    def generate_run(seed: int, n: int = new_tokens) -> tuple[int, float]:
        torch.manual_seed(seed)
        device_sync(device)
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             max_new_tokens=n, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        device_sync(device)
        return _count_until_eos(out[:, ids.shape[1]:], tok.eos_token_id), time.perf_counter() - start

    with torch.no_grad():
        _, warmup_s = static_run(0)  # full size: the compiled graph is for this cache length
        generate_run(0, n=4)
        totals = {"static": [0, 0.0], "generate": [0, 0.0]}
        for rep in range(repeats):
            for name, fn in (("static", static_run), ("generate", generate_run)):
                n, s = fn(rep + 1)
                totals[name][0] += n
                totals[name][1] += s
    static_tps = totals["static"][0] / totals["static"][1]
    generate_tps = totals["generate"][0] / totals["generate"][1]
    engine = model = None  # drop them (and the closures' view) before freeing
    _free(device)
    return {"preset": preset, "dtype": dtype, "rows": int(ids.shape[0]), "new_tokens": new_tokens,
            "mean_length": totals["static"][0] / (repeats * ids.shape[0]), "static_tokens_per_s": round(static_tps, 1),
            "generate_tokens_per_s": round(generate_tps, 1), "ratio": round(static_tps / generate_tps, 3),
            "static_first_run_s": round(warmup_s, 2)}


# ------------------------------------------------------------------ 3. GRPO step
class StepTimer(L.Callback):
    """Wall time (synchronized) and peak allocated bytes of each training batch."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.rows = device, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.base = reset_peak(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        device_sync(self.device)
        seconds = time.perf_counter() - self.start
        rollout_s = float(outputs["rollout"].seconds) if isinstance(outputs, dict) and "rollout" in outputs else 0.0
        self.rows.append({"step_s": seconds, "rollout_s": rollout_s, "peak": peak_bytes(self.device), "base": self.base})


def accepts(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


def grpo_step(device: torch.device, preset: str, dtype: str, step_prompts: int, step_group: int,
              step_new_tokens: int, micro_batch: int, steps: int, chunked: bool | None, **_) -> dict:
    """``steps`` timed GRPO steps after one warm-up step (AdamW state then exists)."""
    kwargs = dict(model=preset, dtype=dtype, num_generations=step_group, max_new_tokens=step_new_tokens,
                  micro_batch_size=micro_batch, lr=1e-6, prompt_format="plain", fast_generation=False)
    if chunked is not None:
        kwargs["chunked_lm_head"] = chunked
    L.seed_everything(0, verbose=False)
    module = GRPO(**kwargs)
    timer = StepTimer(device)
    precision = "bf16-true" if dtype == "bfloat16" else "32-true"
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
                        max_steps=steps + 1, callbacks=[timer], **QUIET)
    trainer.fit(module, ListDataModule(n=step_prompts * (steps + 1), batch_size=step_prompts))
    timed = timer.rows[1:] or timer.rows
    out = {"step_s": statistics.median(r["step_s"] for r in timed),
           "update_s": statistics.median(r["step_s"] - r["rollout_s"] for r in timed)}
    peaks = [r["peak"] for r in timed if r["peak"] is not None]
    out["peak_bytes"] = max(peaks) if peaks else None
    out["peak_over_start_bytes"] = max(r["peak"] - r["base"] for r in timed) if peaks else None
    del module, trainer
    _free(device)
    return out


def grpo_step_benchmark(device: torch.device, **sizes) -> dict:
    fields = {"preset": sizes["preset"], "dtype": sizes["dtype"],
              "rows": sizes["step_prompts"] * sizes["step_group"], "new_tokens": sizes["step_new_tokens"],
              "micro_batch": sizes["micro_batch"]}
    if not accepts(GRPO, "chunked_lm_head"):
        return {**fields, "note": "GRPO has no chunked_lm_head: one run", "default": grpo_step(device, chunked=None, **sizes)}
    on = grpo_step(device, chunked=True, **sizes)
    off = grpo_step(device, chunked=False, **sizes)
    ratios = {"step_time_ratio_chunked_vs_full": on["step_s"] / off["step_s"],
              "update_time_ratio_chunked_vs_full": on["update_s"] / max(off["update_s"], 1e-9)}
    if on["peak_bytes"] is not None:
        ratios["peak_ratio_chunked_vs_full"] = on["peak_bytes"] / off["peak_bytes"]
        ratios["peak_over_start_ratio_chunked_vs_full"] = on["peak_over_start_bytes"] / max(off["peak_over_start_bytes"], 1)
    return {**fields, "chunked": on, "full": off, **{k: round(v, 3) for k, v in ratios.items()}}


# ------------------------------------------------------------------ 4. FP4, 5. the CLI
def fp4_figures(device: torch.device) -> dict:
    """What the FP4 work adds: ``benchmarks/fp4.py:gpu_checks(device) -> dict`` when it exists."""
    if device.type != "cuda":
        return {"status": "skipped: CUDA only"}
    spec = importlib.util.spec_from_file_location("fp4_benchmark", HERE / "fp4.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    checks = getattr(module, "gpu_checks", None)
    if checks is None:
        return {"status": "skipped: benchmarks/fp4.py has no gpu_checks(device)"}
    return {"status": "ran", **checks(device)}


def cli_smoke(device: torch.device, timeout_s: int) -> dict:
    """``lit-reason fit`` of the toy GRPO config for one step, as a user runs it."""
    missing = [m for m in ("jsonargparse", "chess") if not has(m)]
    if missing:
        return {"status": f"skipped: {', '.join(missing)} not installed (carry the wheels: docs/gpu_check.md)"}
    cmd = [sys.executable, "-m", "lit_reason.app.cli", "fit", "--config", "configs/grpo/toy_char_fill.yaml",
           "--trainer.max_steps=1", f"--trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
           "--trainer.devices=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
           "--trainer.enable_model_summary=false", "--data.batch_size=2", "--model.num_generations=2",
           "--model.max_new_tokens=8"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    out = {"status": "passed" if proc.returncode == 0 else "failed", "seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode:
        out["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return out


# ------------------------------------------------------------------ driver
def _free(device: torch.device) -> None:
    torch._dynamo.reset()  # compiled graphs hold the model they traced
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _section(name: str, fn, figures: dict) -> None:
    start = time.perf_counter()
    print(f"[gpu-check] {name} ...", flush=True)
    try:
        figures[name] = fn()
    except Exception as err:  # noqa: BLE001 - one broken section must not hide the others
        figures[name] = {"status": f"failed: {type(err).__name__}: {err}"[:500],
                         "traceback": traceback.format_exc()[-3000:]}
    figures[name]["section_s"] = round(time.perf_counter() - start, 1)


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def summary(figures: dict) -> list[str]:
    env = figures["environment"]
    lines = [f"GPU check, {env['date']}: {env.get('gpu', 'CPU')}, torch {env['torch']}, "
             f"lightning {env['lightning']}, transformers {env['transformers']}", "",
             f"{'check':<48} {'result':<40}", "-" * 89]
    tests = figures.get("cuda_tests", {})
    for name, result in tests.get("tests", {}).items():
        lines.append(f"{'test ' + name:<48} {result['outcome'] + (': ' + result['detail'] if result['detail'] else ''):<40}"[:140])
    if "tests" not in tests:
        lines.append(f"{'cuda tests':<48} {tests.get('status', 'n/a')}")
    r = figures.get("rollout", {})
    if "ratio" in r:
        label = "rollout {} {}x{} static tok/s".format(r["preset"], r["rows"], r["new_tokens"])
        lines.append(f"{label:<48} {r['static_tokens_per_s']:,.0f}")
        lines.append(f"{'rollout model.generate tok/s':<48} {r['generate_tokens_per_s']:,.0f}")
        lines.append(f"{'rollout ratio static / generate':<48} {r['ratio']:.2f}x (first run {r['static_first_run_s']} s)")
    else:
        lines.append(f"{'rollout':<48} {r.get('status', 'n/a')}")
    s = figures.get("grpo_step", {})
    if "chunked" in s:
        for key in ("chunked", "full"):
            label = "grpo step {} ({} rows x {} tokens)".format(key, s["rows"], s["new_tokens"])
            lines.append(f"{label:<48} {s[key]['step_s']:.2f} s (update {s[key]['update_s']:.2f} s), "
                         f"peak {_mib(s[key]['peak_bytes'])}")
        lines.append(f"{'grpo step time ratio chunked / full':<48} {s['step_time_ratio_chunked_vs_full']:.2f} "
                     f"(update {s['update_time_ratio_chunked_vs_full']:.2f})")
        if "peak_ratio_chunked_vs_full" in s:
            lines.append(f"{'grpo peak memory ratio chunked / full':<48} {s['peak_ratio_chunked_vs_full']:.2f} "
                         f"(over start {s['peak_over_start_ratio_chunked_vs_full']:.2f})")
    elif "default" in s:
        lines.append(f"{'grpo step (no chunked_lm_head)':<48} {s['default']['step_s']:.2f} s, peak {_mib(s['default']['peak_bytes'])}")
    else:
        lines.append(f"{'grpo step':<48} {s.get('status', 'n/a')}")
    for key in ("fp4", "cli"):
        lines.append(f"{key:<48} {figures.get(key, {}).get('status', 'n/a')}"[:140])
    lines += ["-" * 89, f"total {figures['seconds']:.0f} s; {'OK' if figures['ok'] else 'FAILED'}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=str(ROOT / "runs" / "gpu_check.json"), help="where the figures go")
    parser.add_argument("--skip", nargs="*", default=[], choices=("tests", "rollout", "grpo_step", "fp4", "cli"))
    parser.add_argument("--test-timeout", type=int, default=360)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --device cpu (small sizes) or on a GPU machine")
    device = torch.device(args.device)
    sizes = SIZES[device.type]
    start = time.perf_counter()
    figures: dict = {"environment": environment(device), "sizes": sizes}
    sections = {
        "cuda_tests": ("tests", lambda: cuda_tests(args.test_timeout)),
        "rollout": ("rollout", lambda: rollout_benchmark(device, **sizes)),
        "grpo_step": ("grpo_step", lambda: grpo_step_benchmark(device, **sizes)),
        "fp4": ("fp4", lambda: fp4_figures(device)),
        "cli": ("cli", lambda: cli_smoke(device, 300)),
    }
    for name, (flag, fn) in sections.items():
        if flag in args.skip:
            figures[name] = {"status": "skipped: --skip"}
        else:
            _section(name, fn, figures)
    figures["seconds"] = round(time.perf_counter() - start, 1)
    figures["ok"] = not any(str(v.get("status", "")).startswith("failed") for v in figures.values() if isinstance(v, dict))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str))
    print("\n".join(summary(figures)))
    print(f"figures: {out}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
