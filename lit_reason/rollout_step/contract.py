"""The rollout step's contract: a batch of problems in, a :class:`ScoredRollout` out.

The module calls its rollout step once per training step and trains on what comes back; how the
completions were produced is the step's business. :class:`~lit_reason.rollout_step.sampling.SampleNow`
samples with the current weights, :class:`~lit_reason.rollout_step.dynamic_sampling.DynamicSampling`
refills the batch until its groups are informative; a multi-turn episode runner or an asynchronous
rollout queue is another subclass, and the module does not change.

What a step may call on the module (all public on :class:`lit_reason.modules.GRPO`):
``hparams.num_generations``, ``generate(problems, generator=...)``, ``sampling_generator(salt)``,
``reward_fns``, ``compute_rewards(...)`` / ``old_policy_pass(...)`` / ``rewards_need_old_pass`` (to
judge a group before training on it), ``tokenizer``, ``global_step``, ``global_rank`` and ``trainer``;
an asynchronous step also ``encode_prompts``, ``sampling_seed_base()``, ``sampling`` and ``policy``
(whose weights it pushes to its sampler).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from lit_reason.rollout import Rollout
from lit_reason.tasks.rewards import ScoredCompletions


@dataclass
class ScoredRollout:
    """What one training step trains on: whole groups, each completion scored once.

    ``problems`` has one entry per group; ``rollout`` holds ``G`` rows per problem, problem-major;
    ``scored`` each row's ``problem.score`` and reward sources; ``trained_rows`` (``[rows]`` bool,
    None = all) keeps rows out of the loss; ``metrics`` are logged with the step."""

    problems: list[Any]
    rollout: Rollout
    scored: ScoredCompletions
    trained_rows: Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> list[Any]:
        """The problem of each rollout row."""
        group = len(self.rollout.texts) // max(len(self.problems), 1)
        return [p for p in self.problems for _ in range(group)]

    @property
    def trained_scores(self) -> ScoredCompletions:
        """``scored`` with every source abstaining on the rows kept out of the loss, so they stay out
        of group and batch statistics and of the logged rewards (the ``scores`` are kept as they are)."""
        return self.scored if self.trained_rows is None else self.scored.abstaining(~self.trained_rows.bool())


class RolloutStep:
    """Turns the data batch of a training step into a :class:`ScoredRollout`.

    Subclasses implement :meth:`__call__`; the hooks mirror Lightning's and run from the module's
    own (``setup``: the trainer is attached, check settings here; ``on_fit_start``: before anything
    trains; ``on_train_start``: the train loader exists; ``teardown``: release processes).
    ``state_dict`` entries are saved in the checkpoint's ``lit_reason`` section and handed back to
    :meth:`load_state_dict` on resume.
    """

    def __call__(self, module: Any, batch: list[Any]) -> ScoredRollout:
        raise NotImplementedError

    def setup(self, module: Any) -> None:
        pass

    def on_fit_start(self, module: Any) -> None:
        pass

    def on_train_start(self, module: Any) -> None:
        pass

    def teardown(self, module: Any) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
