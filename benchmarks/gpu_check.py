"""The GPU check: every CUDA code path once, then the GPU figures; nothing it did is ever lost.

    python3 benchmarks/gpu_check.py --out $OUT --part correctness --budget 300   # call 1 (docs/gpu_check.md)
    python3 benchmarks/gpu_check.py --out $OUT --part figures --budget 390       # call 2, same warm machine
    python3 benchmarks/gpu_check.py --device cpu --out runs/gpu_check          # small sizes, on CPU

* A preflight (~10 s) first compiles one Triton kernel and one ``torch.compile`` function on the
  device and stops with one line (exit 2) when the toolchain cannot (no C compiler, no Python headers).
* Every section writes ``<out>/<name>.json`` (atomically) and prints one ``[gpu-check] name: status``
  line the moment it finishes, so a run killed at any point returns every finished section.
* ``--budget`` seconds: a section whose estimate no longer fits is not started ("not run: budget"),
  and one that runs past the budget is interrupted (SIGALRM).
* The CUDA checks are plain functions (``benchmarks/cuda_checks.py``): no pytest needed. On a GPU
  a check that did not run (budget, missing package) counts as a failure; on CPU the CUDA-only
  ones are skipped.

Sections, ``--part correctness``: the compiled static engine against the uncompiled one (greedy,
sampled), its decode step compiled once, a bf16 GRPO step, FP4 Triton / compiled against eager,
one FSDP step of configs/scale/fsdp.yaml (as written and unclipped), a ZeRO-2 step where
deepspeed imports, and a one-step ``lit-reason fit`` where jsonargparse and chess import.
``--part figures``: rollout tokens/s of the static engine against ``model.generate``, GRPO step
time and peak memory with the chunked LM head on and off (0.5B bf16), and the FP4 figures
(``benchmarks/fp4.py:gpu_checks``: step time against bf16, an FSDP1 FP4 step). ``--sections``
picks sections by name. Exit status: 0 all passed, 1 a section failed or did not run, 2 preflight.
Needs only torch, lightning, transformers, PyYAML (triton on CUDA).
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
import time
import signal
import traceback
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


# ------------------------------------------------------------------ rollout throughput
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
    max_prompt_length = inspect.signature(GRPO.__init__).parameters["max_prompt_length"].default
    engine = StaticCacheRolloutEngine(model, tok, SamplingConfig(max_new_tokens=new_tokens, temperature=1.0),
                                      static_on=(device.type,), max_prompt_length=max_prompt_length)  # as GRPO builds it

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
    engine_positions = engine._cache_key[1] if engine._cache_key else None
    engine = model = None  # drop them (and the closures' view) before freeing
    _free(device)
    return {"preset": preset, "dtype": dtype, "rows": int(ids.shape[0]), "new_tokens": new_tokens,
            "cache_positions": engine_positions,
            "mean_length": totals["static"][0] / (repeats * ids.shape[0]), "static_tokens_per_s": round(static_tps, 1),
            "generate_tokens_per_s": round(generate_tps, 1), "ratio": round(static_tps / generate_tps, 3),
            "static_first_run_s": round(warmup_s, 2)}


# ------------------------------------------------------------------ GRPO step
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


# ------------------------------------------------------------------ FP4 figures, the CLI
def fp4_figures(device: torch.device) -> dict:
    """``benchmarks/fp4.py:gpu_checks(device)``: FP4 step time against bf16, decode, an FSDP1 FP4 step."""
    spec = importlib.util.spec_from_file_location("fp4_benchmark", HERE / "fp4.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.gpu_checks(device, agreement=False)  # the fp4_kernels section checked the numerics
    assert figures.get("fsdp1_fp4_ok", True), figures.get("fsdp1_error")
    return figures


def cli_smoke(device: torch.device, timeout_s: int) -> dict:
    """``lit-reason fit`` of the toy GRPO config for one step, as a user runs it (needs the carried
    jsonargparse and chess wheels: docs/gpu_check.md)."""
    cmd = [sys.executable, "-m", "lit_reason.app.cli", "fit", "--config", "configs/grpo/toy_char_fill.yaml",
           "--trainer.max_steps=1", f"--trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
           "--trainer.devices=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
           "--trainer.enable_model_summary=false", "--data.batch_size=2", "--model.num_generations=2",
           "--model.max_new_tokens=8"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    out = {"status": "passed" if proc.returncode == 0 else f"failed: exit {proc.returncode}",
           "seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode:
        out["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return out


# ------------------------------------------------------------------ helpers
def _free(device: torch.device) -> None:
    torch._dynamo.reset()  # compiled graphs hold the model they traced
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()



# ------------------------------------------------------------------ preflight
PREFLIGHT_FIX = ("install a C compiler and the Python headers (apt-get install build-essential python3-dev) or use "
                 "an image with them: Triton and torch.compile build their kernels at run time")


def preflight(device: torch.device) -> dict:
    """Compile and run one Triton kernel and one ``torch.compile`` function (inductor) on ``device``.
    On CPU: Triton only under TRITON_INTERPRET=1, and torch.compile through ``aot_eager`` (no C
    compiler; inductor's CPU build takes a minute on a small machine)."""
    out = {}
    start = time.perf_counter()
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        import triton
        import triton.language as tl

        @triton.jit
        def add_one(x_ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1.0, mask=offs < n)

        x = torch.zeros(100, device=device)
        add_one[(1,)](x, 100, BLOCK=128)
        device_sync(device)
        assert float(x.sum()) == 100.0, "the Triton kernel ran but computed the wrong sum"
        out["triton_s"] = round(time.perf_counter() - start, 2)
    else:
        out["triton"] = "n/a on CPU without TRITON_INTERPRET=1"
    start = time.perf_counter()
    fn = torch.compile(lambda v: torch.sin(v) * 2 + 1, backend="inductor" if device.type == "cuda" else "aot_eager",
                       fullgraph=True)
    v = torch.linspace(0, 1, 64, device=device)
    torch.testing.assert_close(fn(v), torch.sin(v) * 2 + 1)
    out["torch_compile_s"] = round(time.perf_counter() - start, 2)
    torch._dynamo.reset()
    return out


# ------------------------------------------------------------------ sections
class Section:
    """One named check: its part of the plan, estimated seconds on CUDA / CPU, and what it needs."""

    def __init__(self, name: str, part: str, estimate: tuple[float, float], run, cuda_only: bool = False,
                 needs: tuple[str, ...] = ()) -> None:
        self.name, self.part, self.estimate, self.run = name, part, estimate, run
        self.cuda_only, self.needs = cuda_only, needs


def sections(device: torch.device, sizes: dict) -> list[Section]:
    import cuda_checks as cc

    return [
        Section("static_engine_greedy", "correctness", (40, 20), lambda: cc.static_engine_tokens(device, 0.0)),
        Section("static_engine_sampled", "correctness", (25, 20), lambda: cc.static_engine_tokens(device, 1.0)),
        Section("static_engine_compiles_once", "correctness", (40, 20), lambda: cc.static_engine_compiles_once(device)),
        Section("bf16_grpo_step", "correctness", (40, 0), lambda: cc.bf16_grpo_step(device), cuda_only=True),
        Section("fp4_kernels", "correctness", (40, 0), lambda: cc.fp4_kernels(device), cuda_only=True,
                needs=("triton",)),
        Section("fsdp_step", "correctness", (30, 0), lambda: cc.scale_step("fsdp"), cuda_only=True),
        Section("fsdp_step_unclipped", "correctness", (20, 0), lambda: cc.scale_step("fsdp", max_grad_norm=0.0),
                cuda_only=True),
        Section("deepspeed_zero2_step", "correctness", (40, 0), lambda: cc.scale_step("deepspeed_zero2"),
                cuda_only=True, needs=("deepspeed",)),
        Section("cli", "correctness", (40, 60), lambda: cli_smoke(device, 300), needs=("jsonargparse", "chess")),
        Section("rollout", "figures", (90, 30), lambda: rollout_benchmark(device, **sizes)),
        Section("grpo_step", "figures", (120, 60), lambda: grpo_step_benchmark(device, **sizes)),
        Section("fp4", "figures", (150, 0), lambda: fp4_figures(device), cuda_only=True),
    ]


#: optional packages whose absence makes a section "n/a" rather than a failure (not on the image, not carried)
OPTIONAL_SECTIONS = {"deepspeed_zero2_step"}


class OverBudget(Exception):
    pass


def _on_alarm(signum, frame):
    raise OverBudget("ran past the time budget")


def write_result(out_dir: Path, name: str, result: dict) -> Path:
    """``<out_dir>/<name>.json``, written to a temporary name and renamed: a kill never leaves half a file."""
    path = out_dir / f"{name}.json"
    tmp = out_dir / f".{name}.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, path)
    return path


def run_section(section: Section, device: torch.device, deadline: float) -> dict:
    """Run one section within the budget; its result always has a ``status``."""
    on_gpu = device.type == "cuda"
    if section.cuda_only and not on_gpu:
        return {"status": "skipped: needs CUDA"}
    missing = [m for m in section.needs if not has(m)]
    if missing:
        reason = f"{', '.join(missing)} not installed"
        return {"status": f"n/a: {reason}" if section.name in OPTIONAL_SECTIONS else f"not run: {reason}"}
    left = deadline - time.perf_counter()
    estimate = section.estimate[0 if on_gpu else 1]
    if estimate > left:
        return {"status": f"not run: budget (estimate {estimate:.0f} s, {max(left, 0):.0f} s left)"}
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(left, 0.01))
    try:
        result = {"status": "passed", **section.run()}
    except OverBudget:
        result = {"status": f"failed: ran past the budget after {time.perf_counter() - start:.0f} s"}
    except Exception as err:  # noqa: BLE001 - one broken section must not hide the others
        result = {"status": f"failed: {type(err).__name__}: {err}"[:500], "traceback": traceback.format_exc()[-3000:]}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if str(result.get("status", "")).startswith("skipped") and on_gpu:
        result["status"] = "not run: " + result["status"]  # a GPU run must run what it is for
    result["section_s"] = round(time.perf_counter() - start, 1)
    _free(device)
    return result


def counts_as_failure(status: str) -> bool:
    """Failed, or did not run (budget, missing package); skipped-on-CPU and optional n/a do not count."""
    return status.startswith(("failed", "not run"))


def one_line(name: str, result: dict) -> str:
    figures = {k: v for k, v in result.items() if k not in ("status", "traceback", "output_tail", "section_s")
               and isinstance(v, (int, float, str, bool)) and not isinstance(v, dict)}
    shown = ", ".join(f"{k}={v}" for k, v in list(figures.items())[:6])
    return f"[gpu-check] {name}: {result['status'][:200]} ({result.get('section_s', 0)} s){' ' + shown if shown else ''}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu_check"),
                        help="folder for one JSON per section (default: $OUT, the folder that comes back)")
    parser.add_argument("--part", choices=("correctness", "figures", "all"), default="all")
    parser.add_argument("--sections", nargs="*", default=None, help="run only these sections (by name)")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run (preflight included)")
    parser.add_argument("--no-preflight", action="store_true")
    parser.add_argument("--preflight-timeout", type=float, default=60.0,
                        help="seconds the preflight may take (about 10 on a GPU) before the run stops")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --device cpu (small sizes) or on a GPU machine")
    start = time.perf_counter()
    deadline = start + args.budget
    device = torch.device(args.device)
    sizes = SIZES[device.type]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_result(out_dir, "environment", {**environment(device), "sizes": sizes, "part": args.part,
                                          "budget_s": args.budget})
    print(f"[gpu-check] writing to {out_dir} (budget {args.budget:.0f} s)", flush=True)
    if not args.no_preflight:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, args.preflight_timeout)
        try:
            result = {"status": "passed", **preflight(device)}
        except Exception as err:  # noqa: BLE001 - the one line says what and how to fix it
            first = (str(err).strip().splitlines() or [""])[0][:300]
            fix = PREFLIGHT_FIX if not isinstance(err, OverBudget) else (
                f"it took over {args.preflight_timeout:.0f} s (a cold compile takes about 10): check the machine's "
                "load or give --preflight-timeout more")
            write_result(out_dir, "preflight", {"status": f"failed: {type(err).__name__}: {first}",
                                                "fix": fix, "traceback": traceback.format_exc()[-3000:]})
            print(f"[gpu-check] preflight FAILED ({type(err).__name__}: {first}): {fix}", flush=True)
            return 2
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        result["section_s"] = round(time.perf_counter() - start, 1)
        write_result(out_dir, "preflight", result)
        print(one_line("preflight", result), flush=True)
    chosen = [s for s in sections(device, sizes) if (args.part in ("all", s.part))
              and (args.sections is None or s.name in args.sections)]
    unknown = set(args.sections or ()) - {s.name for s in sections(device, sizes)}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    results = {}
    for section in chosen:
        results[section.name] = run_section(section, device, deadline)
        write_result(out_dir, section.name, results[section.name])
        print(one_line(section.name, results[section.name]), flush=True)
    failed = sorted(n for n, r in results.items() if counts_as_failure(r["status"]))
    summary = {"ok": not failed, "failed_or_not_run": failed, "seconds": round(time.perf_counter() - start, 1),
               "statuses": {n: r["status"] for n, r in results.items()}}
    write_result(out_dir, "summary", summary)
    print(f"[gpu-check] {'OK' if not failed else 'FAILED: ' + ', '.join(failed)} in {summary['seconds']:.0f} s; "
          f"results in {out_dir}", flush=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
