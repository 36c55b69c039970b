"""lit-reason GRPO vs TRL's GRPOTrainer: time per step, rollout tokens/s and peak memory.

Both sides train the SAME saved weights (a random-init preset written with ``save_pretrained``)
on the same ``char_fill`` prompts with the same reward, G, completion length, AdamW (constant lr,
no weight decay, grad-norm clip 1), loss ``grpo``, beta 0, one optimizer step per rollout, no vLLM,
no gradient checkpointing (TRL's default is on; it is switched off on both sides), fp32 or bf16.

Each side runs in its own subprocess (memory isolation); runs alternate ours/TRL/TRL/ours... so
both see the same machine load, and the table reports medians over ``--repeats`` and ratios.

* time per step: wall time between the ends of consecutive optimizer steps, after ``--warmup``
  steps (includes data loading, logging, everything the trainer does per step);
* rollout tokens/s: completion tokens generated / seconds spent generating (ours: the engine's
  own timer; TRL: a timer around ``GRPOTrainer._generate``);
* peak memory: CUDA: ``torch.cuda.max_memory_allocated`` over training; CPU: the process's
  peak RSS (``ru_maxrss``) minus its RSS just before training starts (imports and weights excluded,
  so the number is what training itself adds: activations, gradients, optimizer state).

    python benchmarks/vs_trl.py                           # CPU, tiny preset
    python benchmarks/vs_trl.py --preset qwen2-0.5b-shape --device cuda --dtype bfloat16 --new 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

RESULT_TAG = "VS_TRL_RESULT "


# --------------------------------------------------------------------------- shared setup
def problems(count: int, seed: int = 0):
    from datamodules.toy import make_toy_problem

    return [make_toy_problem("char_fill", seed, i) for i in range(count)]


def char_fill_reward(completion: str, letter: str) -> float:
    """The toy task's partial credit (the same function ToyDataModule's verifier computes)."""
    text = completion[:256]
    return sum(c == letter for c in text) / max(len(text), 1)


def save_model(preset: str, dtype: str, path: str) -> None:
    from lit_reason.models.policy import load_policy

    torch.manual_seed(0)
    policy = load_policy(preset, dtype=dtype)
    policy.model.save_pretrained(path)
    policy.tokenizer.save_pretrained(path)


def memory_start(device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return 0.0
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def memory_peak(device: str, start: float) -> float:
    """MiB: CUDA peak allocated, or CPU peak RSS above the pre-training RSS."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start


# --------------------------------------------------------------------------- the two sides
def run_ours(args) -> dict:
    import lightning as L

    from datamodules.toy import ToyDataModule
    from lit_reason.modules import GRPO

    L.seed_everything(0, verbose=False)
    module = GRPO(model=args.model_dir, dtype=args.dtype, num_generations=args.group, max_new_tokens=args.new,
                  lr=args.lr, loss_type="grpo", beta=0.0, prompt_format="plain", max_grad_norm=1.0,
                  max_prompt_length=256)
    data = ToyDataModule(task="char_fill", batch_size=args.prompts, train_size=args.prompts * (args.steps + 2),
                         val_size=0)
    ends, tokens, gen_seconds = [], [], []

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if args.device == "cuda":
                torch.cuda.synchronize()
            ends.append(time.perf_counter())
            tokens.append(outputs["rollout"].num_tokens)
            gen_seconds.append(outputs["rollout"].seconds)

    trainer = L.Trainer(max_steps=args.steps, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Clock()], num_sanity_val_steps=0)
    mem0 = memory_start(args.device)
    start = time.perf_counter()
    trainer.fit(module, data)
    return summarise(args, start, ends, tokens, gen_seconds, memory_peak(args.device, mem0))


def run_trl(args) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lit_reason.models.policy import load_tokenizer  # AutoTokenizer would drop the char tokenizer's spaces

    rows = [{"prompt": p.prompt, "letter": p.answer[0]} for p in problems(args.prompts * (args.steps + 2))]

    def reward(completions, letter, **kwargs):
        return [char_fill_reward(c, l) for c, l in zip(completions, letter)]

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="vs_trl_"), per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group, max_completion_length=args.new, learning_rate=args.lr, weight_decay=0.0,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, optim="adamw_torch", loss_type="grpo",
        beta=0.0, max_steps=args.steps, use_vllm=False, gradient_checkpointing=False, report_to="none",
        save_strategy="no", disable_tqdm=True, logging_steps=10**6, seed=0, use_cpu=args.device == "cpu",
        bf16=args.dtype == "bfloat16", temperature=1.0, top_p=1.0,
    )
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype))
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=load_tokenizer(args.model_dir))
    ends, tokens, gen_seconds = [], [], []
    generate = trainer._generate

    def timed_generate(prompts):
        t0 = time.perf_counter()
        out = generate(prompts)
        gen_seconds.append(time.perf_counter() - t0)
        tokens.append(sum(len(ids) for ids in out[1]))
        return out

    trainer._generate = timed_generate

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            if args.device == "cuda":
                torch.cuda.synchronize()
            ends.append(time.perf_counter())

    trainer.add_callback(Clock())
    mem0 = memory_start(args.device)
    start = time.perf_counter()
    trainer.train()
    return summarise(args, start, ends, tokens, gen_seconds, memory_peak(args.device, mem0))


def summarise(args, start, ends, tokens, gen_seconds, peak_mib) -> dict:
    if len(ends) != args.steps:
        raise RuntimeError(f"expected {args.steps} optimizer steps, saw {len(ends)}")
    w = args.warmup
    return {
        "step_s": (ends[-1] - ends[w - 1]) / (args.steps - w) if w else (ends[-1] - start) / args.steps,
        "tokens_per_s": sum(tokens[w:]) / sum(gen_seconds[w:]),
        "tokens_per_step": sum(tokens[w:]) / (args.steps - w),
        "peak_mib": peak_mib,
    }


# --------------------------------------------------------------------------- driver
def run_side(side: str, args, model_dir: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--model-dir", model_dir]
    for name in ("device", "dtype", "prompts", "group", "new", "lr", "steps", "warmup"):
        cmd += [f"--{name}", str(getattr(args, name))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{side} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="G, completions per prompt")
    parser.add_argument("--new", type=int, default=64, help="max completion tokens")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timings")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating")
    parser.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 <= args.warmup < args.steps:
        parser.error("--warmup must be in [0, --steps)")

    if args.side:
        result = (run_ours if args.side == "ours" else run_trl)(args)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return

    with tempfile.TemporaryDirectory(prefix="vs_trl_model_") as model_dir:
        save_model(args.preset, args.dtype, model_dir)
        runs: dict[str, list[dict]] = {"ours": [], "trl": []}
        for rep in range(args.repeats):
            for side in (("ours", "trl") if rep % 2 == 0 else ("trl", "ours")):
                runs[side].append(run_side(side, args, model_dir))
                print(f"# run {rep} {side}: {runs[side][-1]}", flush=True)
    med = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    print(f"\n{args.preset} {args.dtype} on {args.device} ({threads} threads), {args.prompts} prompts x G={args.group}, "
          f"{args.new} new tokens, {args.steps} steps ({args.warmup} warm-up), median of {args.repeats} alternating runs")
    print("| metric | lit-reason | TRL | ours/TRL |\n|---|---|---|---|")
    for key, label in (("step_s", "time per step (s)"), ("tokens_per_s", "rollout tokens/s"),
                       ("peak_mib", "peak memory (MiB)"), ("tokens_per_step", "completion tokens/step")):
        ours, trl = med["ours"][key], med["trl"][key]
        print(f"| {label} | {ours:.4g} | {trl:.4g} | {ours / trl:.2f} |")


if __name__ == "__main__":
    main()
