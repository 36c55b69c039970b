"""Rollout tokens/s of colocated vLLM, the built-in KV-cache engine and ``model.generate``.

Same model, prompts, G and sampling for all three; each measurement is its own subprocess (so
vLLM's thread binding and memory stay out of the others), and the engines alternate over
``--repeats`` rounds, so drift on a shared machine hits them alike. Prints the median tokens/s
of each and its ratio to the built-in engine. Run it with the vLLM venv's python (it has all three):

    OMP_NUM_THREADS=2 .venv-vllm/bin/python benchmarks/rollout_engines.py --repeats 3

Only completion tokens up to each row's end count. vLLM's start-up (tens of seconds) and one
warm-up rollout per engine are excluded; ``model.generate`` returns no log-probs (the other two do).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ENGINES = ("builtin", "vllm", "generate")
SMOLLM = os.path.expanduser("~/.cache/lit-reason/models/smollm2-135m-instruct-v1")
PROMPTS = ["What is 17 + 25? Answer briefly.", "Name three prime numbers.", "Explain what a group is in one sentence.",
           "Write the word 'seven' backwards.", "What is the capital of France?", "Count from 1 to 5.",
           "Is 91 a prime number?", "Give a synonym for 'quick'."]


def measure(engine: str, model_path: str, prompts: int, group: int, new_tokens: int, rounds: int) -> dict:
    import torch

    from lit_reason.models.policy import load_policy
    from lit_reason.rollout import RolloutEngine, SamplingConfig

    loaded = load_policy(model_path)
    model, tok = loaded.model.eval(), loaded.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             if tok.chat_template else p for p in (PROMPTS * 4)[:prompts]]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc.input_ids.repeat_interleave(group, 0), enc.attention_mask.repeat_interleave(group, 0)
    cfg = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0)
    session = None
    if engine == "builtin":
        eng = RolloutEngine(model, tok, cfg)
        run = lambda g: eng.generate(ids, mask, g).num_tokens  # noqa: E731
    elif engine == "vllm":
        from lit_reason.rollout.vllm_engine import VLLMRolloutEngine, build_vllm_session

        session = build_vllm_session(model, tok, {"kv_cache_gib": 1.0}, ids.shape[1], new_tokens)
        eng = VLLMRolloutEngine(session, tok, cfg)
        run = lambda g: eng.generate(ids, mask, g).num_tokens  # noqa: E731
    else:
        eos = tok.eos_token_id

        def run(g):
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                     max_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
            completion = out[:, ids.shape[1]:]
            ended = (completion == eos).int().cumsum(-1)
            return int(((ended == 0) | ((ended == 1) & (completion == eos))).sum())
    run(torch.Generator().manual_seed(123))  # warm-up (vLLM: start + first sync happen here)
    tokens, seconds = 0, 0.0
    for r in range(rounds):
        start = time.perf_counter()
        tokens += run(torch.Generator().manual_seed(r))
        seconds += time.perf_counter() - start
    result = {"engine": engine, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
    if session is not None:
        before, count = session.sync_seconds, session.syncs
        for _ in range(3):
            session.sync()  # what each optimizer step costs on top (weights pushed from memory)
        result["sync_seconds"] = (session.sync_seconds - before) / (session.syncs - count)
        session.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=SMOLLM if os.path.isdir(SMOLLM) else "small")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4, help="G, completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="timed rollouts per subprocess")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of subprocesses")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(measure(args.worker, args.model, args.prompts, args.group, args.new_tokens, args.rounds)))
        return
    results: dict[str, list[float]] = {e: [] for e in args.engines}
    for repeat in range(args.repeats):
        order = args.engines if repeat % 2 == 0 else list(reversed(args.engines))
        for engine in order:
            cmd = [sys.executable, __file__, "--worker", engine, "--model", args.model, "--prompts", str(args.prompts),
                   "--group", str(args.group), "--new-tokens", str(args.new_tokens), "--rounds", str(args.rounds)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{engine} failed:\n{out.stderr[-3000:]}")
            result = json.loads(line[7:])
            value = result["tokens_per_s"]
            results[engine].append(value)
            sync = f"  (weight sync {result['sync_seconds']:.2f} s)" if "sync_seconds" in result else ""
            print(f"repeat {repeat} {engine:9s} {value:8.1f} tokens/s{sync}", flush=True)
    base = statistics.median(results["builtin"]) if "builtin" in results else None
    print(f"\nmodel={args.model} prompts={args.prompts} G={args.group} max_new_tokens={args.new_tokens} "
          f"threads={os.environ.get('OMP_NUM_THREADS', '?')}")
    for engine, values in results.items():
        med = statistics.median(values)
        ratio = f"  x{med / base:.2f} vs builtin" if base else ""
        print(f"{engine:9s} median {med:8.1f} tokens/s over {len(values)} runs{ratio}")


if __name__ == "__main__":
    main()
