"""A multi-turn step against a single-turn step that samples the same number of tokens.

Multi-turn: ``--turns`` assistant turns of ``--new`` tokens each against an environment that
always answers with a short feedback line. Single-turn: one turn of ``turns x new`` tokens. A
third arm plays the multi-turn episodes with each turn's prefix recomputed (the engine's
``turn_cache`` off). Each step = the rollout (the module's rollout step) + one forward/backward
over the rollout (what the update costs per pass). Runs alternate so all arms see the same
machine load; the figure that matters is the ratio to single-turn of the seconds per sampled
token (a random-init preset ends some turns at EOS, so the arms do not sample exactly the same
count; the table shows both). With the cache kept, what a multi-turn step still pays extra is the
prefill of each environment turn, decoding against a longer context, the finished rows that stay
in the batch until their turn ends (to keep their cache), and the environment's tokens in the
training forward. The load average is printed before and after: compare figures from a quiet machine.

    python benchmarks/episodes.py [--presets tiny small] [--prompts 4] [--group 8] [--new 32] [--turns 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lit_reason.modules import GRPO
from lit_reason.tasks.environment import Observation
from lit_reason.tasks.problem import TextProblem


class AlwaysAgain:
    """Never done: every turn is answered with the same short line (the episode ends at max_turns)."""

    def __init__(self, problem):
        self.problem = problem

    def reset(self):
        return self.problem.prompt

    def step(self, text):
        return Observation([{"role": "user", "content": "Not yet, try again."}], reward=float(len(text) % 2))


def one_step(module, problems) -> tuple[float, float, int]:
    start = time.perf_counter()
    step = module.rollout_step(module, problems)
    rolled = time.perf_counter()
    scores = module.completion_scores(module.policy, step.rollout)
    (scores.logps * step.rollout.completion_mask).sum().backward()
    module.policy.zero_grad(set_to_none=True)
    return rolled - start, time.perf_counter() - start, step.rollout.num_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.prompts}x{args.group}, "
          f"{args.turns} turns x {args.new} tokens vs 1 turn x {args.turns * args.new} tokens, "
          f"load average {os.getloadavg()[0]:.2f}")
    problems = [TextProblem(f"Question {i}: say something.", "-", lambda c: 0.0) for i in range(args.prompts)]
    print("| preset | sampled tokens multi / single | rollout s multi / single | step s multi / single "
          "| rollout s/token ratio | step s/token ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for preset in args.presets:
        torch.manual_seed(0)
        common = dict(model=preset, num_generations=args.group, sampling_seed=0, prompt_format="chat")
        multi = GRPO(**common, max_new_tokens=args.new,
                     episodes={"environment": "benchmarks.episodes:AlwaysAgain", "max_turns": args.turns,
                               "max_episode_tokens": 100_000})
        single = GRPO(**common, max_new_tokens=args.turns * args.new)
        recompute = GRPO(**common, max_new_tokens=args.new,
                         episodes={"environment": "benchmarks.episodes:AlwaysAgain", "max_turns": args.turns,
                                   "max_episode_tokens": 100_000})
        recompute.engine.turn_cache = False  # each turn prefills the whole episode so far
        for module in (single, recompute):
            module.policy.load_state_dict(multi.policy.state_dict())
        arms = {"multi": multi, "multi, recomputed": recompute, "single": single}
        for module in arms.values():
            one_step(module, problems)  # warm-up
        runs = {name: [] for name in arms}
        for _ in range(args.repeats):
            for name, module in arms.items():
                runs[name].append(one_step(module, problems))
        med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), v[0][2]) for k, v in runs.items()}
        s = med["single"]
        for name in ("multi", "multi, recomputed"):
            m = med[name]
            print(f"| {preset} ({name}) | {m[2]} / {s[2]} | {m[0]:.2f} / {s[0]:.2f} | {m[1]:.2f} / {s[1]:.2f} | "
                  f"{(m[0] / m[2]) / (s[0] / s[2]):.2f}x | {(m[1] / m[2]) / (s[1] / s[2]):.2f}x |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
