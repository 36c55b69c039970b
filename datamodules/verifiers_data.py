"""VerifiersDataModule: the tasks of a `verifiers` (0.4) Taskset as problems.

    data:
      class_path: VerifiersDataModule
      init_args:
        taskset: my_package.tasks:MyTaskset   # or a verifiers taskset id (an installed package)
        taskset_args: {}                      # the taskset's own config fields
        val_size: 16                          # the first tasks are held out for validation

Each task's prompt (with its system prompt) is the problem's prompt and the task's own weighted
``@vf.reward`` functions score it; ``model.episodes.environment: verifiers`` plays the tasks as
episodes with their tools and stops (lit_reason.tasks.verifiers_env, docs/episodes.md).
"""

from __future__ import annotations

from datamodules.base import ProblemDataModule, ProblemDataset
from lit_reason.tasks.verifiers_env import load_taskset, taskset_problems


class VerifiersDataModule(ProblemDataModule):
    """Args:
        taskset: ``package.module:Class`` or a verifiers taskset id.
        taskset_args: the taskset's config fields (validated by its config type).
        limit: read at most this many tasks (an infinite taskset needs one).
        val_size: the first ``val_size`` tasks are the validation set, the rest train.
    """

    def __init__(self, taskset: str, taskset_args: dict | None = None, limit: int | None = None, val_size: int = 0,
                 batch_size: int = 8, val_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__(batch_size, val_batch_size, num_workers)
        self.taskset, self.taskset_args, self.limit, self.val_size = taskset, taskset_args, limit, val_size
        self._problems: list | None = None

    def problems(self) -> list:
        if self._problems is None:
            taskset = load_taskset(self.taskset, self.taskset_args)
            if not taskset.bounded and self.limit is None:
                raise ValueError(f"data.taskset={self.taskset!r} is infinite: set data.limit")
            self._problems = taskset_problems(taskset, self.limit)
            if len(self._problems) <= self.val_size:
                raise ValueError(f"data.taskset={self.taskset!r} has {len(self._problems)} tasks, not more than "
                                 f"data.val_size={self.val_size}: nothing left to train on")
        return self._problems

    def train_dataset(self) -> ProblemDataset:
        return ProblemDataset.from_items(self.problems()[self.val_size:])

    def val_dataset(self) -> ProblemDataset | None:
        return ProblemDataset.from_items(self.problems()[: self.val_size]) if self.val_size else None
