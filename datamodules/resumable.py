"""A train DataLoader that a checkpoint can resume mid-epoch, on the same problems.

Lightning restores the step count and optimizer on resume, but a plain DataLoader restarts its
epoch from the first batch with a fresh random order, so the resumed run would train on other
problems than the uninterrupted one. Two pieces fix that:

* :class:`EpochRandomSampler` draws the order of epoch ``e`` from ``(seed, e)`` alone (Lightning
  calls ``set_epoch``), so the order of an interrupted epoch can be drawn again. It is a
  ``RandomSampler``, so under DDP Lightning still swaps in its ``DistributedSampler`` (which is
  seeded by the global seed and the epoch in the same way).
* :class:`ResumableDataLoader` counts the batches it has handed out in the current epoch and
  exposes ``state_dict`` / ``load_state_dict``, which Lightning saves with the loops' state; after
  a load, the next epoch pass skips the batches already trained on (by index: nothing is built).
  It also leaves the global torch RNG alone (a plain DataLoader draws a worker seed from it).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, RandomSampler


class EpochRandomSampler(RandomSampler):
    """A random permutation per epoch that depends only on ``(seed, epoch)``."""

    def __init__(self, data_source: Any, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = int(os.getenv("PL_GLOBAL_SEED", 0)) if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position in the epoch is saved in checkpoints (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Its own generator for the worker base seed: a plain DataLoader draws it from the global
        # torch RNG at every iter(), which would shift the global RNG of a resumed run.
        kwargs.setdefault("generator", torch.Generator().manual_seed(int(os.getenv("PL_GLOBAL_SEED", 0))))
        super().__init__(*args, **kwargs)
        self._served = 0  # batches handed out in the current epoch pass
        self._skip = 0  # batches to skip at the start of the next pass (set by load_state_dict)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: the order is drawn at the first next(), after Lightning's set_epoch.
        skip, self._skip = self._skip, 0
        self._served = skip
        if skip:
            remaining = list(self.batch_sampler)[skip:]  # indices only: skipped items are never built
            loader = DataLoader(self.dataset, batch_sampler=remaining, num_workers=self.num_workers,
                                collate_fn=self.collate_fn, pin_memory=self.pin_memory,
                                worker_init_fn=self.worker_init_fn, generator=self.generator)
            batches = iter(loader)
        else:
            batches = super().__iter__()
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        state = {"batches_served": self._served}
        if isinstance(self.sampler, EpochRandomSampler):
            state["seed"] = self.sampler.seed
        return state

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        served = int(state_dict.get("batches_served", 0))
        self._skip = served if 0 < served < len(self) else 0  # a finished epoch resumes at the next one
        if isinstance(self.sampler, EpochRandomSampler) and "seed" in state_dict:
            self.sampler.seed = int(state_dict["seed"])  # the order of the checkpointed run, whatever the new seed
