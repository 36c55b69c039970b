"""What one compilation costs: static-engine tokens/s with the cache at GRPO's
``max_prompt_length + max_new_tokens`` against the cache rounded up to the prompt's 64-bucket.

The decode step attends over the whole cache (unwritten slots masked), so a cache sized for the
longest allowed prompt does more work per token than one sized for this batch, in exchange for one
compiled graph for every batch. Same model, prompts and seeds; the two alternate over ``--repeats``
rounds after a warm-up each, in one process. On CPU the static path runs uncompiled.

    python benchmarks/static_cache_length.py                     # tiny preset, CPU
    python benchmarks/static_cache_length.py --device cuda --model qwen2-0.5b-shape --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_reason.models.policy import load_policy
from lit_reason.rollout import SamplingConfig
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine

PROMPTS = ["Write the letter a.", "Say b twice.", "What is 7 + 5?", "Sort 3 1 2."]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-prompt-length", type=int, default=512, help="GRPO's default")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    loaded = load_policy(args.model, dtype=args.dtype)
    model, tok = loaded.model.to(device).eval(), loaded.tokenizer
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    ids, mask = (t.repeat_interleave(args.group, 0).to(device) for t in (enc.input_ids, enc.attention_mask))
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0)
    engines = {"bucket": StaticCacheRolloutEngine(model, tok, cfg, static_on=(device.type,)),
               "max_prompt_length": StaticCacheRolloutEngine(model, tok, cfg, static_on=(device.type,),
                                                             max_prompt_length=args.max_prompt_length)}
    totals = {name: [0, 0.0] for name in engines}
    with torch.no_grad():
        for rep in range(args.repeats + 1):
            for name, engine in engines.items():
                gen = torch.Generator(device=device).manual_seed(rep)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                rollout = engine.generate(ids, mask, gen)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if rep:  # the first round warms up (and compiles on CUDA)
                    totals[name][0] += int(rollout.completion_mask.sum())
                    totals[name][1] += time.perf_counter() - start
    result = {name: {"cache_positions": engines[name]._cache_key[1], "tokens_per_s": round(n / s, 1)}
              for name, (n, s) in totals.items()}
    result["ratio_max_prompt_length_vs_bucket"] = round(
        result["max_prompt_length"]["tokens_per_s"] / result["bucket"]["tokens_per_s"], 3)
    for name in engines:
        print(f"{name:<18} cache {result[name]['cache_positions']:>5} positions: {result[name]['tokens_per_s']:,.1f} tok/s")
    print(f"ratio max_prompt_length / bucket: {result['ratio_max_prompt_length_vs_bucket']:.2f}")
    return result


if __name__ == "__main__":
    main()
