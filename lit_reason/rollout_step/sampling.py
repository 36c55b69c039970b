"""The synchronous rollout step: sample the batch now, with the current weights, and score it."""

from __future__ import annotations

from typing import Any

from lit_reason.rollout_step.contract import RolloutStep, ScoredRollout
from lit_reason.tasks.rewards import score_completions


class SampleNow(RolloutStep):
    """G completions per problem from the module's engine (generator seeded by seed, step and
    rank, so a resumed run draws the same), each scored once by its verifier and reward sources."""

    def sample(self, module: Any, problems: list[Any], salt: int = 0) -> ScoredRollout:
        rollout = module.generate(problems, generator=module.sampling_generator(salt=salt))
        rows = [p for p in problems for _ in range(module.hparams.num_generations)]
        scored = score_completions(module.reward_fns, rows, rollout.texts)
        return ScoredRollout(list(problems), rollout, scored, metrics=scored.failure_metrics())

    def __call__(self, module: Any, batch: list[Any]) -> ScoredRollout:
        return self.sample(module, list(batch))
