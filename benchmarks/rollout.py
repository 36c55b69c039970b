"""Rollout throughput: lit-reason's engine vs ``model.generate`` on the same model and batch.

Both sample with temperature 1 from the same left-padded prompts (G completions each) with a KV
cache and stop at EOS; throughput = generated completion tokens / second. Runs alternate so both
see the same machine load; the figure that matters is the ratio.

Two regimes: a random-init model rarely emits EOS, so every row runs to the limit (no length
spread); ``--eos-bias`` adds a constant to the EOS logit of the same model for both engines, so
completion lengths spread out as in real RL (the table prints the mean length), where the engine's dropping
of finished rows pays.

    python benchmarks/rollout.py [--presets tiny small] [--prompts 8] [--group 8] [--new 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_reason.models.policy import load_policy
from lit_reason.rollout import RolloutEngine, SamplingConfig

PROMPTS = ["What is 7 + 5?", "Solve 3x + 2 = 11 for x.", "Sort the list [3, 1, 2].", "Is 17 prime?",
           "Name a move that wins at tic-tac-toe.", "How many legs do 3 spiders have?", "Reverse 'abc'.", "2 * 21 = ?"]


def engine_run(model, tok, ids, mask, new_tokens, seed):
    engine = RolloutEngine(model, tok, SamplingConfig(max_new_tokens=new_tokens, temperature=1.0))
    start = time.perf_counter()
    r = engine.generate(ids, mask, torch.Generator().manual_seed(seed))
    return r.num_tokens, time.perf_counter() - start


def hf_run(model, tok, ids, mask, new_tokens, seed):
    torch.manual_seed(seed)
    start = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                         max_new_tokens=new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    seconds = time.perf_counter() - start
    completion = out[:, ids.shape[1]:]
    # tokens up to and including the first EOS, like the engine's completion mask
    is_eos = completion == tok.eos_token_id
    before_eos = (is_eos.long().cumsum(-1) - is_eos.long()) == 0
    return int(before_eos.sum()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eos-bias", type=float, nargs="+", default=[0.0, 3.3],
                        help="EOS logit offsets to run (0 = the plain model)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.prompts}x{args.group}, "
          f"{args.new} new tokens")
    print(f"{'model':<8} {'eos bias':>8} {'mean len':>8} {'engine tok/s':>13} {'generate tok/s':>15} {'ratio':>7}")
    for preset, bias in [(p, b) for p in args.presets for b in args.eos_bias]:
        torch.manual_seed(0)
        policy = load_policy(preset)
        model, tok = policy.model.eval(), policy.tokenizer
        eos_id = tok.eos_token_id
        model.lm_head.register_forward_hook(lambda mod, inp, out: out.index_add(-1, torch.tensor([eos_id]),
                                                                                 torch.full_like(out[..., :1], bias)))
        enc = tok([PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)], return_tensors="pt", padding=True)
        ids, mask = enc.input_ids.repeat_interleave(args.group, 0), enc.attention_mask.repeat_interleave(args.group, 0)
        engine_run(model, tok, ids, mask, 4, 0)  # warm-up both paths
        hf_run(model, tok, ids, mask, 4, 0)
        totals = {"engine": [0, 0.0], "generate": [0, 0.0]}
        rows = ids.shape[0] * args.repeats
        with torch.no_grad():
            for rep in range(args.repeats):
                for name, fn in (("engine", engine_run), ("generate", hf_run)):
                    n, s = fn(model, tok, ids, mask, args.new, rep)
                    totals[name][0] += n
                    totals[name][1] += s
        eng = totals["engine"][0] / totals["engine"][1]
        gen = totals["generate"][0] / totals["generate"][1]
        mean_len = totals["engine"][0] / rows
        print(f"{preset:<8} {bias:>8.1f} {mean_len:>8.1f} {eng:>13.0f} {gen:>15.0f} {eng / gen:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
