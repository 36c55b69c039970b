"""Peak memory and step time of GRPO's memory knobs on a ~100M-parameter model, and the KL error of
a quantized reference.

    .venv/bin/python benchmarks/memory.py                       # all configurations, CPU or GPU
    .venv/bin/python benchmarks/memory.py --configs baseline ref_nf4 --steps 3 --json out.json

Every configuration runs in its own subprocess (clean peak figures): it builds GRPO on the
``llama-100m`` preset (Llama-shaped, 12 x 768, vocab 32k, untied head: 110M parameters) with a
KL reference (beta 0.04), trains ``--steps`` steps on the toy task (2 prompts x G=4, 64 new
tokens) and reports:

  * peak memory: CUDA max allocated, or on CPU the process's peak RSS (ru_maxrss); the RSS after
    building the module (weights, reference, imports) is reported beside it;
  * step time: mean over the steps after the first (rollout + reference pass + update);
  * ref KL: for quantized references, the mean per-token k3 KL(policy || reference) on one rollout
    at initialisation, where the full-precision reference gives exactly 0 (so it is the error
    the quantization adds to the KL term), and the max |log-prob difference|.

The baseline computes log-probs without chunking (``logprob_chunk_size`` larger than the rollout).

``--lm-head`` runs the other table: peak memory of ONE GRPO training forward + backward (log-probs,
entropy, the clipped loss with a KL term, ``backward``) of a 1-layer, 64-wide Qwen2-shaped model
against the vocabulary (up to Qwen's 151,936) and the completion length (8 completions), with the
chunked LM head (``chunked_lm_head: true``, lit_reason.algorithms.lm_head) and with full logits (``false``).
Each configuration runs in its own process; the peak is the rise of the peak RSS (VmHWM, reset
just before) over the RSS after building the module and the rollout, with glibc returning every
block over 64 kB on free (``MALLOC_MMAP_THRESHOLD_``) so RSS follows live memory. Ratios are to the
reference run of the same table (full logits, 151,936 x 512).

    .venv/bin/python benchmarks/memory.py --lm-head                     # the whole grid (peak ~7 GB)
    .venv/bin/python benchmarks/memory.py --lm-head --lm-head-cases chunked:151936:512 full:151936:512

``--lora`` runs the LoRA table (docs/lora.md): GRPO on ``llama-100m`` (float32, beta 0.04, lr 1e-4,
log-probs in chunks of 64; 2 steps of 32 new tokens unless ``--steps`` / ``--max_new_tokens`` say
otherwise), full fine-tuning against LoRA r16 and r64, each in its own subprocess. Beside the peak
it reports the bytes of the module's parameters and buffers (the full run's reference copy
included; a LoRA run has none: its reference is the base with the adapters off), of the ``.grad``
tensors and of the AdamW state after training. On CPU the peak is the peak RSS minus the RSS before
the model was built (imports, peft included in every configuration, excluded).

    .venv/bin/python benchmarks/memory.py --lora                        # full, lora_r16, lora_r64
    .venv/bin/python benchmarks/memory.py --lora --lora-configs full lora_r16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIGS = {
    "baseline": {"logprob_chunk_size": 10**9},
    "adamw8bit": {"logprob_chunk_size": 10**9, "optimizer": "adamw8bit"},
    "ref_8bit": {"logprob_chunk_size": 10**9, "ref_quantization": "8bit"},
    "ref_nf4": {"logprob_chunk_size": 10**9, "ref_quantization": "nf4"},
    "chunked_logps": {"logprob_chunk_size": 64},
    "grad_checkpointing": {"logprob_chunk_size": 10**9, "gradient_checkpointing": True},
    "micro_batch_2": {"logprob_chunk_size": 10**9, "micro_batch_size": 2},
    "all": {"logprob_chunk_size": 64, "optimizer": "adamw8bit", "ref_quantization": "nf4",
            "gradient_checkpointing": True, "micro_batch_size": 2},
    "chunked_lm_head": {"chunked_lm_head": True},
}

#: ``--lora``: full fine-tuning against LoRA adapters (the first entry is the reference)
LORA_CONFIGS = {
    "full": {},
    "lora_r16": {"lora": {"r": 16, "alpha": 32}},
    "lora_r64": {"lora": {"r": 64, "alpha": 128}},
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def fit_timed(module, steps: int, cuda: bool):
    """Train ``module`` ``steps`` steps on the toy task; returns the trainer and the mean step time
    over the steps after the first (the first pays for warm-up)."""
    import lightning as L
    import torch

    from datamodules.toy import ToyDataModule

    times: list[float] = []

    class Timer(L.Callback):
        def on_train_batch_start(self, *args):
            if cuda:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_train_batch_end(self, *args):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = L.Trainer(accelerator="auto", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[Timer()])
    trainer.fit(module, datamodule=ToyDataModule(batch_size=2, val_size=0))
    timed = times[1:] or times
    return trainer, sum(timed) / len(timed)


def run_workers(names: list[str], flag: str, extra: list[str], key: str, env: dict | None = None) -> list[dict]:
    """One subprocess per entry (``__file__ flag name *extra``), so each peak is clean; returns
    the RESULT row each printed, or ``{key: name, "error": last stderr line}``."""
    rows = []
    for name in names:
        proc = subprocess.run([sys.executable, __file__, flag, name, *extra], capture_output=True, text=True, env=env, check=False)
        found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        row = json.loads(found[-1][7:]) if found else {key: name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def write_json(rows: list[dict], path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=2)


def worker(name: str, steps: int, model: str, max_new_tokens: int) -> dict:
    import lightning as L
    import torch

    from datamodules.toy import ToyDataModule
    from lit_reason.algorithms import objectives as obj
    from lit_reason.modules import GRPO

    cuda = torch.cuda.is_available()
    L.seed_everything(0)
    # the rows measured before the chunked LM head existed keep the full-logits path
    module = GRPO(model=model, num_generations=4, max_new_tokens=max_new_tokens, beta=0.04, lr=1e-5,
                  **{"chunked_lm_head": False, **CONFIGS[name]})
    built_mb = rss_mb()
    result = {"config": name, "device": "cuda" if cuda else "cpu", "built_rss_mb": round(built_mb)}

    if module.hparams.ref_quantization is not None:  # KL error of the quantized reference at init
        if cuda:
            module.cuda()
        data = ToyDataModule(batch_size=2, val_size=0)
        rollout = module.generate([data.train_dataset()[i] for i in range(2)],
                                  generator=module.sampling_generator())
        old = module.old_policy_pass(rollout, need_old=True, need_ref=True)
        mask = rollout.completion_mask.float()
        kl = (obj.kl_k3(old["old_logps"], old["ref_logps"]) * mask).sum() / mask.sum()
        result["ref_kl"] = float(kl)
        result["ref_max_abs_logp_diff"] = float(((old["old_logps"] - old["ref_logps"]).abs() * mask).max())

    _, step_s = fit_timed(module, steps, cuda)
    result["step_s"] = round(step_s, 3)
    if cuda:
        result["peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    else:
        result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["params_m"] = round(sum(p.numel() for p in module.policy.parameters()) / 1e6, 1)
    return result


def lora_worker(name: str, steps: int, model: str, max_new_tokens: int) -> dict:
    """One ``--lora`` configuration: the module's tensors, its gradients, the AdamW state and the peak."""
    # peft and the toy data are imported in every configuration, so the baseline RSS includes them
    import lightning as L
    import peft  # noqa: F401
    import torch

    from datamodules.toy import ToyDataModule  # noqa: F401
    from lit_reason.modules import GRPO

    cuda = torch.cuda.is_available()
    L.seed_everything(0)
    before_mb = rss_mb()
    module = GRPO(model=model, num_generations=4, max_new_tokens=max_new_tokens, beta=0.04, lr=1e-4,
                  logprob_chunk_size=64, **LORA_CONFIGS[name])
    trainer, step_s = fit_timed(module, steps, cuda)
    state = [v for s in trainer.optimizers[0].state.values() for v in s.values() if torch.is_tensor(v)]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_mb)
    return {
        "config": name, "device": "cuda" if cuda else "cpu",
        "trainable_m": round(sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6, 2),
        "module_mb": round(tensor_mb([*module.parameters(), *module.buffers()])),
        "grad_mb": round(tensor_mb([p.grad for p in module.parameters() if p.grad is not None]), 1),
        "optimizer_mb": round(tensor_mb(state), 1),
        "peak_mb": round(peak),
        "step_s": round(step_s, 2),
    }


def lora_table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["config"] == "full" and "error" not in r), None)
    lines = ["| config | trainable M | module MB | grad MB | optimizer MB | peak MB | peak vs full | step s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error'][:80]} | | | | | | |")
            continue
        ratio = f"{r['peak_mb'] / base['peak_mb']:.2f}x" if base else ""
        lines.append(f"| {r['config']} | {r['trainable_m']} | {r['module_mb']} | {r['grad_mb']} | {r['optimizer_mb']} | "
                     f"{r['peak_mb']} | {ratio} | {r['step_s']} |")
    return "\n".join(lines)


#: ``mode:vocab:length`` -> one GRPO forward + backward; the first full 151,936 x 512 run is the reference
LM_HEAD_CASES = [
    "full:151936:512", "chunked:151936:512",
    "full:151936:128", "chunked:151936:128", "full:151936:256", "chunked:151936:256",
    "chunked:151936:1024", "chunked:151936:2048",
    "full:32768:512", "chunked:32768:512", "full:8192:512", "chunked:8192:512",
]
LM_HEAD_REFERENCE = "full:151936:512"


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def lm_head_worker(case: str, rows: int = 8, chunk: int = 1024) -> dict:
    """One GRPO training forward + backward of ``rows`` completions on a 1 x 64 model."""
    import torch

    from lit_reason.algorithms import objectives as obj
    from lit_reason.models import policy
    from lit_reason.modules import GRPO
    from lit_reason.rollout import Rollout

    mode, vocab, length = case.split(":")
    vocab, length = int(vocab), int(length)
    name = f"bench-1x64-v{vocab}"
    policy.PRESETS[name] = lambda v: policy._qwen2(vocab, hidden=64, layers=1, heads=4, kv_heads=2, ffn=192)
    torch.manual_seed(0)
    module = GRPO(model=name, num_generations=rows, beta=0.04, logprob_chunk_size=chunk,
                  chunked_lm_head=mode == "chunked")
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (rows, 16), generator=gen)
    completion = torch.randint(0, vocab, (rows, length), generator=gen)
    ones = torch.ones(rows, length, dtype=torch.long)
    rollout = Rollout(prompt, torch.ones_like(prompt), completion, ones, torch.zeros(rows, length),
                      torch.zeros(rows, dtype=torch.bool), [""] * rows)
    advantages = torch.randn(rows, generator=gen)
    with torch.no_grad():  # the reference pass, before the measured window (as in a step)
        ref_logps = module.reference_scores(rollout).logps
    base = _status_bytes("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    scores = module.completion_scores(module.policy, rollout, entropy=True)
    loss, _ = obj.policy_loss(scores.logps, scores.logps.detach(), advantages, ones.float(), ref_logps=ref_logps, beta=0.04)
    float(scores.entropy.detach().sum())  # the logged entropy metric
    loss.backward()
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM:") - base
    logits_mb = rows * length * vocab * 4 / 2**20
    return {"case": case, "mode": mode, "vocab": vocab, "length": length, "peak_mb": round(peak / 2**20),
            "fp32_logits_mb": round(logits_mb), "seconds": round(seconds, 2), "loss": float(loss)}


def lm_head_table(rows: list[dict]) -> str:
    ref = next((r for r in rows if r.get("case") == LM_HEAD_REFERENCE and "peak_mb" in r), None)
    by_case = {r["case"]: r for r in rows if "peak_mb" in r}
    lines = ["| head | vocab | tokens | peak MB | vs reference | vs full, same shape | one fp32 [B,T,V] MB | fwd+bwd s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | failed: {r['error'][:80]} | | | | | | |")
            continue
        full = by_case.get(f"full:{r['vocab']}:{r['length']}")
        vs_ref = f"{r['peak_mb'] / ref['peak_mb']:.3f}x" if ref else ""
        vs_full = f"{r['peak_mb'] / full['peak_mb']:.3f}x" if full and r["mode"] == "chunked" else ""
        lines.append(f"| {r['mode']} | {r['vocab']} | 8 x {r['length']} | {r['peak_mb']} | {vs_ref} | {vs_full} | "
                     f"{r['fp32_logits_mb']} | {r['seconds']} |")
    return "\n".join(lines)


def run_lm_head(cases: list[str], json_path: str | None) -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = run_workers(cases, "--lm-head-worker", [], "case", env=env)
    print(lm_head_table(rows))
    write_json(rows, json_path)


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["config"] == "baseline"), None)
    lines = ["| config | peak MB | vs baseline | RSS after build MB | step s | ref KL (k3) | max abs dlogp |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error'][:80]} | | | | | |")
            continue
        ratio = f"{r['peak_mb'] / base['peak_mb']:.2f}x" if base and "peak_mb" in base else ""
        kl = f"{r['ref_kl']:.2e}" if "ref_kl" in r else ("0 (exact)" if r["config"] != "all" else "")
        diff = f"{r['ref_max_abs_logp_diff']:.3f}" if "ref_max_abs_logp_diff" in r else ""
        lines.append(f"| {r['config']} | {r['peak_mb']} | {ratio} | {r['built_rss_mb']} | {r['step_s']} | {kl} | {diff} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="default 3 (2 with --lora)")
    parser.add_argument("--model", default="llama-100m")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default 64 (32 with --lora)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lm-head", action="store_true", help="the chunked-LM-head table (vocabulary x length)")
    parser.add_argument("--lm-head-cases", nargs="*", default=LM_HEAD_CASES, help="mode:vocab:length entries")
    parser.add_argument("--lm-head-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lora", action="store_true", help="the LoRA table: full fine-tuning vs LoRA r16 / r64")
    parser.add_argument("--lora-configs", nargs="*", default=list(LORA_CONFIGS), choices=list(LORA_CONFIGS))
    parser.add_argument("--lora-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lora = args.lora or args.lora_worker is not None
    steps = args.steps if args.steps is not None else (2 if lora else 3)
    max_new_tokens = args.max_new_tokens if args.max_new_tokens is not None else (32 if lora else 64)
    if args.lm_head_worker:
        print("RESULT " + json.dumps(lm_head_worker(args.lm_head_worker)))
        return
    if args.lm_head:
        run_lm_head(args.lm_head_cases, args.json)
        return
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, steps, args.model, max_new_tokens)))
        return
    if args.lora_worker:
        print("RESULT " + json.dumps(lora_worker(args.lora_worker, steps, args.model, max_new_tokens)))
        return
    extra = ["--steps", str(steps), "--model", args.model, "--max_new_tokens", str(max_new_tokens)]
    if args.lora:
        rows = run_workers(args.lora_configs, "--lora-worker", extra, "config")
        print(lora_table(rows))
    else:
        rows = run_workers(args.configs, "--worker", extra, "config")
        print(table(rows))
    write_json(rows, args.json)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
