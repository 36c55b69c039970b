"""A multi-turn step against a single-turn step that samples the same number of tokens.

Multi-turn: ``--turns`` assistant turns of ``--new`` tokens each against an environment that
always answers with a short feedback line (a random-init preset rarely ends a turn early, so every
turn samples ``--new`` tokens). Single-turn: one turn of ``turns x new`` tokens. Each step = the
rollout (the module's rollout step) + one forward/backward over the rollout (what the update
costs per pass). Runs alternate so both see the same machine load; the figure that matters is the
ratio multi / single of the seconds per sampled token (a random-init preset still ends some turns
at EOS, so the two do not sample exactly the same count; the table shows both). The built-in engine re-reads the episode so far at each turn (no KV cache
across turns): the prefill of the growing prefix is what the multi-turn step pays extra, plus the
environment's tokens in the training forward.

    python benchmarks/episodes.py [--presets tiny small] [--prompts 4] [--group 8] [--new 32] [--turns 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
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
          f"{args.turns} turns x {args.new} tokens vs 1 turn x {args.turns * args.new} tokens")
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
        single.policy.load_state_dict(multi.policy.state_dict())
        one_step(multi, problems), one_step(single, problems)  # warm-up
        runs = {"multi": [], "single": []}
        for _ in range(args.repeats):
            runs["multi"].append(one_step(multi, problems))
            runs["single"].append(one_step(single, problems))
        med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), v[0][2]) for k, v in runs.items()}
        m, s = med["multi"], med["single"]
        print(f"| {preset} | {m[2]} / {s[2]} | {m[0]:.2f} / {s[0]:.2f} | {m[1]:.2f} / {s[1]:.2f} | "
              f"{(m[0] / m[2]) / (s[0] / s[2]):.2f}x | {(m[1] / m[2]) / (s[1] / s[2]):.2f}x |")


if __name__ == "__main__":
    main()
