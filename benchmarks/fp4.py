"""Step time and peak memory of FP4Precision vs bf16 / fp32, one process, same model and data.

    .venv/bin/python benchmarks/fp4.py                      # tiny + ~100M Qwen2, auto device
    .venv/bin/python benchmarks/fp4.py --sizes 100m --steps 10 --json out.json

For each size and mode (fp32, bf16 autocast, FP4 NVFP4, FP4 NVFP4 without the Q(W) cache, FP4
MXFP4; FP4 = FP4Precision defaults: bf16 autocast elsewhere, LM head kept) it builds the same
seeded model, runs ``--warmup`` untimed then ``--steps`` timed AdamW steps (forward, backward,
update, and the plugin's after-step hook) and reports the mean step time, its ratio to bf16, and
the peak memory during the timed steps (CUDA: max allocated; CPU: growth of the process's peak
RSS, reset through /proc/self/clear_refs). Modes alternate within each size, so a load change on
a shared machine hits all of them. It also compares the quantizer against torchao's MX / NVFP4
reference quantizers where torchao is installed (it is not a dependency).

``gpu_checks(device) -> dict`` is what ``benchmarks/gpu_check.py`` calls on a CUDA device: the
fused Triton kernel (bit for bit) and the compiled path (within a stated tolerance) against eager,
quantizer timings, the
100M step-time ratios (target FP4 <= 1.5x bf16) and one FSDP1 step with FP4FSDPPrecision.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lit_reason.precision import FP4Precision, quantize

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_check_support

SIZES = {
    # name: (config kwargs, batch, seq) ; seq/batch shrink on CPU
    "tiny": (dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2), 8, 32),
    "100m": (dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4), 8, 512),
}
MODES = ["fp32", "bf16", "fp4-nvfp4", "fp4-nvfp4-nocache", "fp4-mxfp4"]


def build(size: str, device: torch.device) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(max_position_embeddings=1024, tie_word_embeddings=False, **SIZES[size][0])
    return Qwen2ForCausalLM(cfg).to(device)


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def reset_peak(device: torch.device) -> int:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    return rss_kib("VmRSS") * 1024


def peak_since(device: torch.device, base: int) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() - base
    return rss_kib("VmHWM") * 1024 - base


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model, opt, ids, context, plugin) -> float:
    with context():
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if plugin is not None:
        plugin.after_optimizer_step()  # what FP4Precision.optimizer_step does under a Trainer
    return loss.item()


def run_mode(size: str, mode: str, device: torch.device, steps: int, warmup: int, batch: int, seq: int) -> dict:
    model = build(size, device)
    context, plugin = contextlib.nullcontext, None
    if mode == "bf16":
        context = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    elif mode.startswith("fp4"):
        plugin = FP4Precision(fmt=mode.split("-")[1], cache_weights="nocache" not in mode)
        plugin.convert_module(model)
        context = plugin.forward_context
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g).to(device)
    for _ in range(warmup):
        train_step(model, opt, ids, context, plugin)
    base = reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = train_step(model, opt, ids, context, plugin)
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    out = {"size": size, "mode": mode, "step_s": dt, "peak_mem_mib": peak_since(device, base) / 2**20, "loss": loss}
    del model, opt
    return out


def decode_reuse(size: str, device: torch.device, tokens: int) -> dict:
    """Rollout-style decoding between two optimizer steps: ``tokens`` no-grad forwards of one
    token each (no KV cache; every linear runs once per token), FP4 NVFP4 with the Q(W) cache
    against without, and bf16. The cache quantizes W once; without it every token does."""
    out = {}
    ids = torch.zeros(1, 1, dtype=torch.long, device=device)
    for mode in ("bf16", "fp4-cache", "fp4-nocache"):
        model = build(size, device)
        context = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
        if mode != "bf16":
            plugin = FP4Precision(cache_weights=mode == "fp4-cache")
            plugin.convert_module(model)
            context = plugin.forward_context
        with torch.no_grad(), context():
            model(input_ids=ids)  # warm-up (fills the cache)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(tokens):
                model(input_ids=ids)
            sync(device)
        out[mode] = (time.perf_counter() - t0) / tokens
        del model
    return out


def report(results: list[dict], size: str, batch: int, seq: int) -> None:
    bf16 = next((r["step_s"] for r in results if r["size"] == size and r["mode"] == "bf16"), None)
    print(f"\n{size}: batch {batch} x seq {seq}")
    print(f"  {'mode':<18} {'step ms':>9} {'x bf16':>7} {'peak MiB':>9} {'loss':>7}")
    for r in (r for r in results if r["size"] == size):
        r["ratio_vs_bf16"] = r["step_s"] / bf16 if bf16 else None
        ratio = f"{r['ratio_vs_bf16']:.2f}" if bf16 else "-"
        print(f"  {r['mode']:<18} {r['step_s'] * 1e3:>9.1f} {ratio:>7} {r['peak_mem_mib']:>9.1f} {r['loss']:>7.3f}")


def torchao_comparison(device: torch.device) -> list[str]:
    """Quantizer agreement and speed vs torchao; torchao's emulated MX linear for one step."""
    try:
        from torchao.prototype.mx_formats.mx_tensor import MXTensor
        from torchao.prototype.mx_formats.nvfp4_tensor import (
            NVFP4Tensor,
            per_tensor_amax_to_scale,
        )
    except Exception as e:  # noqa: BLE001 - report whatever stops it
        return [f"torchao: not available ({type(e).__name__}: {e})"]
    lines = []
    x = torch.randn(4096, 1024, device=device)
    refs = {
        "mxfp4": lambda: MXTensor.to_mx(x, torch.float4_e2m1fn_x2, block_size=32).dequantize(torch.float32),
        "nvfp4": lambda: NVFP4Tensor.to_nvfp4(x, per_tensor_scale=per_tensor_amax_to_scale(x.abs().max()))
        .dequantize(torch.float32),
    }
    for fmt, ref in refs.items():
        ours = lambda fmt=fmt: quantize(x, fmt)
        same = torch.equal(ref(), ours())
        times = []
        for fn in (ours, ref):
            fn()
            sync(device)
            t0 = time.perf_counter()
            for _ in range(5):
                fn()
            sync(device)
            times.append((time.perf_counter() - t0) / 5 * 1e3)
        lines.append(f"torchao {fmt} quantizer: bit-identical to ours: {same}; 4096x1024 fake-quant "
                     f"ours {times[0]:.2f} ms, torchao {times[1]:.2f} ms")
    try:
        from torchao.prototype.mx_formats import MXDynamicActivationMXWeightConfig
        from torchao.quantization import quantize_

        lin = torch.nn.Linear(1024, 1024, device=device, dtype=torch.bfloat16)
        quantize_(lin, MXDynamicActivationMXWeightConfig(activation_dtype=torch.float4_e2m1fn_x2,
                                                         weight_dtype=torch.float4_e2m1fn_x2))
        xb = torch.randn(64, 1024, device=device, dtype=torch.bfloat16, requires_grad=True)
        lin(xb).float().sum().backward()
        lines.append("torchao emulated MX linear: forward+backward ran")
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0][:160] if str(e) else ""
        lines.append(f"torchao emulated MX linear: cannot train on {device.type} ({type(e).__name__}: {msg})")
    return lines


def _time_ms(fn, device: torch.device, repeats: int = 20) -> float:
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats * 1e3


def kernel_checks(device: torch.device, agreement: bool = True) -> dict:
    """Triton and compiled quantizers against eager (mismatches counted: Triton bit for bit,
    compiled within the tolerance of gpu_check_support) and their speed (4096 x 4096)."""
    import os

    from gpu_check_support import fp4_kernel_agreement
    from lit_reason.precision import formats, kernels

    n = 4096 if device.type == "cuda" else 256  # CPU: the Triton interpreter is slow
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, n, device=device, generator=g) * 3
    runnable = device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    out: dict = fp4_kernel_agreement(device) if runnable and agreement else {}
    if kernels.triton_available() and runnable:
        xt = x.t()
        for name, fn in {
            "eager_nvfp4_nearest_ms": lambda: formats.fake_quantize(x, "nvfp4", None, "ocp"),
            "triton_nvfp4_nearest_ms": lambda: kernels.triton_fake_quantize(x, "nvfp4", False, 0, "ocp"),
            "eager_nvfp4_stochastic_T_ms": lambda: formats.fake_quantize(
                xt, "nvfp4", torch.rand(n, n // 16, 16, device=device), "ocp"),
            "triton_nvfp4_stochastic_T_ms": lambda: kernels.triton_fake_quantize(xt, "nvfp4", True, 1, "ocp"),
        }.items():
            out[name] = round(_time_ms(fn, device), 3)
        out["triton_speedup_nearest"] = round(out["eager_nvfp4_nearest_ms"] / out["triton_nvfp4_nearest_ms"], 2)
        out["triton_speedup_stochastic_T"] = round(
            out["eager_nvfp4_stochastic_T_ms"] / out["triton_nvfp4_stochastic_T_ms"], 2)
    else:
        out["triton"] = "not run: not installed, or CPU without TRITON_INTERPRET=1"
    os.environ["LIT_REASON_FP4_BACKEND"] = "compile"
    try:
        compiled = kernels.compiled_fake_quantize()
        out["compiled_nvfp4_nearest_ms"] = round(_time_ms(lambda: compiled(x, "nvfp4", None, "ocp"), device), 3)
    except Exception as e:  # noqa: BLE001 - report, do not hide
        out["compiled_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    finally:
        del os.environ["LIT_REASON_FP4_BACKEND"]
    return out


FSDP_SCRIPT = """
import sys, torch, lightning as L
sys.path.insert(0, {root!r})
from lightning.pytorch.strategies import FSDPStrategy
from lit_reason.precision import FP4FSDPPrecision
from benchmarks_fp4 import build_lm
class M(L.LightningModule):
    def __init__(self):
        super().__init__(); self.model = build_lm()
    def training_step(self, ids, _):
        return self.model(input_ids=ids, labels=ids).loss
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)
    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randint(0, 100, (8, 32)), batch_size=4)
plugin = FP4FSDPPrecision()
t = L.Trainer(max_steps=2, accelerator="cuda", devices=1, strategy=FSDPStrategy(), plugins=[plugin], logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
m = M(); t.fit(m)
print("FP4_FSDP_OK", len(plugin.fp4_layers), float(t.callback_metrics.get("train_loss", 0.0)))
"""


def fsdp_one_gpu_check(timeout_s: int = 300) -> dict:
    """One FSDP1 (Lightning FSDPStrategy) fit of a tiny Qwen2 with FP4FSDPPrecision, in a
    subprocess (it initialises a process group)."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "benchmarks_fp4.py").write_text(
            "import torch\nfrom transformers import Qwen2Config, Qwen2ForCausalLM\n"
            "def build_lm():\n    torch.manual_seed(0)\n"
            "    return Qwen2ForCausalLM(Qwen2Config(vocab_size=100, hidden_size=64, intermediate_size=128, "
            "num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))\n")
        script = Path(tmp, "fsdp_fp4.py")
        script.write_text(FSDP_SCRIPT.format(root=root))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tmp, root]))
        try:
            proc = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"fsdp1_fp4_ok": False, "fsdp1_error": f"timeout after {timeout_s} s"}
    ok = proc.returncode == 0 and "FP4_FSDP_OK" in proc.stdout
    res = {"fsdp1_fp4_ok": ok}
    if not ok:
        res["fsdp1_error"] = (proc.stderr or proc.stdout)[-600:]
    return res


def gpu_checks(device: torch.device, agreement: bool = True) -> dict:
    """The FP4 part of ``benchmarks/gpu_check.py`` (CUDA, ~2-3 min on an H100/H200 class GPU):
    bit-exactness of the Triton and compiled quantizers against eager, quantizer timings, the
    100M step-time ratios vs bf16 (target: FP4 <= 1.5x bf16), and one FSDP1 step."""
    device = torch.device(device)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__}
    out.update(kernel_checks(device, agreement))
    results = []
    gpu = device.type == "cuda"
    size, (_, batch, seq) = "100m", SIZES["100m"]
    if not gpu:
        size, batch, seq = "tiny", SIZES["tiny"][1], SIZES["tiny"][2]
    for mode in ("bf16", "fp4-nvfp4", "fp4-nvfp4-nocache", "fp4-mxfp4"):
        r = run_mode(size, mode, device, steps=10 if gpu else 2, warmup=3 if gpu else 1, batch=batch, seq=seq)
        results.append(r)
    bf16 = results[0]["step_s"]
    for r in results:
        out[f"{size}_{r['mode']}_step_ms"] = round(r["step_s"] * 1e3, 2)
        out[f"{size}_{r['mode']}_peak_mib"] = round(r["peak_mem_mib"], 1)
        if r["mode"] != "bf16":
            out[f"{size}_{r['mode']}_over_bf16"] = round(r["step_s"] / bf16, 3)
    out["target_fp4_le_1.5x_bf16"] = out[f"{size}_fp4-nvfp4_over_bf16"] <= 1.5
    d = decode_reuse(size, device, 32 if gpu else 4)
    out[f"{size}_decode_fp4_cached_over_bf16"] = round(d["fp4-cache"] / d["bf16"], 3)
    out[f"{size}_decode_fp4_uncached_over_bf16"] = round(d["fp4-nocache"] / d["bf16"], 3)
    if gpu:
        out.update(fsdp_one_gpu_check())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,100m")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10 on GPU, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 3 on GPU, 1 on CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--decode-tokens", type=int, default=8, help="one-token forwards timed for the cache (0: skip)")
    ap.add_argument("--gpu-checks", action="store_true", help="run gpu_checks(device) only and print its dict")
    args = ap.parse_args()
    if args.gpu_checks:
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
        print(json.dumps(gpu_checks(dev), indent=1))
        return
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    steps = args.steps or (10 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    print(f"device={device} ({torch.cuda.get_device_name() if gpu else 'cpu'}), torch {torch.__version__}, "
          f"steps={steps} warmup={warmup}")
    results = []
    for size in args.sizes.split(","):
        _, batch, seq = SIZES[size]
        if not gpu and size == "100m":
            batch, seq = 1, 128  # keep the CPU run in minutes
        for mode in args.modes.split(","):
            r = run_mode(size, mode, device, steps, warmup, batch, seq)
            r.update(batch=batch, seq=seq)
            results.append(r)
        report(results, size, batch, seq)
        if args.decode_tokens:
            d = decode_reuse(size, device, args.decode_tokens)
            print(f"  decode ({args.decode_tokens} one-token forwards): bf16 {d['bf16'] * 1e3:.1f} ms/token, "
                  f"FP4 cached Q(W) {d['fp4-cache'] * 1e3:.1f} ({d['fp4-cache'] / d['bf16']:.2f}x bf16), "
                  f"FP4 uncached {d['fp4-nocache'] * 1e3:.1f} ({d['fp4-nocache'] / d['bf16']:.2f}x bf16)")
            results.append({"size": size, "mode": "decode", **d})
    notes = torchao_comparison(device)
    print("\n" + "\n".join(notes))
    if gpu:
        for r in results:
            if r["size"] == "100m" and r["mode"].startswith("fp4") and r["ratio_vs_bf16"]:
                verdict = "meets" if r["ratio_vs_bf16"] <= 1.5 else "misses"
                print(f"target FP4 <= 1.5x bf16 (100m, {r['mode']}): {r['ratio_vs_bf16']:.2f}x, {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "results": results, "notes": notes}, f, indent=1)


if __name__ == "__main__":
    main()
