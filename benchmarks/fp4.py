"""Step time and peak memory of FP4Precision vs bf16 / fp32, one process, same model and data.

    .venv/bin/python benchmarks/fp4.py                      # tiny + ~100M Qwen2, auto device
    .venv/bin/python benchmarks/fp4.py --sizes 100m --steps 10 --json out.json

For each size and mode (fp32, bf16 autocast, FP4 NVFP4, FP4 MXFP4; FP4 = FP4Precision defaults:
bf16 autocast elsewhere, LM head kept) it builds the same seeded model, runs ``--warmup``
untimed then ``--steps`` timed AdamW steps (forward, backward, update) and reports the mean
step time, its ratio to bf16, and the peak memory during the timed steps (CUDA: max allocated;
CPU: growth of the process's peak RSS, reset through /proc/self/clear_refs). It also compares
the quantizer against torchao's MX / NVFP4 reference quantizers and tries torchao's emulated MX
linear for one training step, where torchao is installed (it is not a dependency).
Target on a GPU: FP4 step time <= 1.5x bf16 for the 100M model.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lit_reason.precision import FP4Precision, quantize

SIZES = {
    # name: (config kwargs, batch, seq) ; seq/batch shrink on CPU
    "tiny": (dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2), 8, 32),
    "100m": (dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4), 8, 512),
}
MODES = ["fp32", "bf16", "fp4-nvfp4", "fp4-mxfp4"]


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


def run_mode(size: str, mode: str, device: torch.device, steps: int, warmup: int, batch: int, seq: int) -> dict:
    model = build(size, device)
    context = contextlib.nullcontext
    if mode == "bf16":
        context = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    elif mode.startswith("fp4"):
        plugin = FP4Precision(fmt=mode.split("-")[1])
        plugin.convert_module(model)
        context = plugin.forward_context
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g).to(device)

    def step() -> float:
        with context():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(warmup):
        step()
    base = reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    out = {"size": size, "mode": mode, "step_s": dt, "peak_mem_mib": peak_since(device, base) / 2**20, "loss": loss}
    del model, opt
    return out


def torchao_comparison(device: torch.device) -> list[str]:
    """Quantizer agreement and speed vs torchao; torchao's emulated MX linear for one step."""
    try:
        from torchao.prototype.mx_formats.mx_tensor import MXTensor
        from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale
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
        ours = lambda: quantize(x, fmt)  # noqa: E731
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,100m")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10 on GPU, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 3 on GPU, 1 on CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
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
        bf16 = next((r["step_s"] for r in results if r["size"] == size and r["mode"] == "bf16"), None)
        print(f"\n{size}: batch {batch} x seq {seq}")
        print(f"  {'mode':<10} {'step ms':>9} {'x bf16':>7} {'peak MiB':>9} {'loss':>7}")
        for r in (r for r in results if r["size"] == size):
            r["ratio_vs_bf16"] = r["step_s"] / bf16 if bf16 else None
            ratio = f"{r['ratio_vs_bf16']:.2f}" if bf16 else "-"
            print(f"  {r['mode']:<10} {r['step_s'] * 1e3:>9.1f} {ratio:>7} {r['peak_mem_mib']:>9.1f} {r['loss']:>7.3f}")
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
