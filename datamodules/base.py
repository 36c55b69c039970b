"""Shared plumbing for DataModules that yield lists of Problems.

Problems are generated (or loaded) per index by a pure function of the index, so a map-style
dataset is enough: Lightning injects its DistributedSampler under DDP and every rank sees its own
disjoint shard, while item ``i`` is the same object on every machine.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Hashable, Iterable, Sequence

import lightning as L
from torch.utils.data import DataLoader, Dataset

from datamodules.resumable import EpochRandomSampler, ResumableDataLoader
from lit_reason.utils.faults import BadInput


def collate_problems(batch: list[Any]) -> list[Any]:
    """Problems are Python objects: a batch is just the list of them."""
    return list(batch)


def prompt_hash(prompt: str) -> bytes:
    """A short, process-independent digest of a prompt (``hash()`` is salted per process)."""
    return hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def distinct_eval_items(groups: Iterable[Hashable], make: Callable[[Hashable, int], Any], per_group: int) -> list[Any]:
    """The eval split of a generated source (Enigmata, reasoning-gym), one copy for both.

    For each group (a task x level), up to ``per_group`` items with prompts not seen before (in any
    group) from ``make(group, 0)``, ``make(group, 1)``, ... for at most ``4 * per_group + 16`` tries;
    ``make`` returns None for a try to skip. A group whose instance space runs out first keeps only
    half of its items, so the train stream, which re-draws eval prompts, still has some to draw.
    """
    items: list[Any] = []
    seen: set[bytes] = set()
    for group in groups:
        mine = []
        for attempt in range(4 * per_group + 16):
            if len(mine) == per_group:
                break
            item = make(group, attempt)
            if item is None:
                continue
            digest = prompt_hash(item.prompt)
            if digest in seen:
                continue
            seen.add(digest)
            mine.append(item)
        if len(mine) < per_group:
            mine = mine[: max(1, len(mine) // 2)]
        items += mine
    return items


class ProblemDataset(Dataset):
    """A map-style dataset whose item ``i`` is ``make(i)``: built lazily, cached, deterministic."""

    def __init__(self, make: Callable[[int], Any], size: int, cache: bool = True) -> None:
        if size < 0:
            raise ValueError(f"dataset size must be >= 0, got {size}")
        self.make, self.size, self._cache = make, int(size), ({} if cache else None)

    @classmethod
    def from_items(cls, items: Sequence[Any]) -> "ProblemDataset":
        items = list(items)
        return cls(items.__getitem__, len(items), cache=False)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.size:
            raise IndexError(index)
        if self._cache is None:
            return self.make(index)
        if index not in self._cache:
            self._cache[index] = self.make(index)
        return self._cache[index]


class ProblemDataModule(L.LightningDataModule):
    """Base DataModule: subclasses provide the three datasets, this class makes the loaders.

    Args:
        batch_size: prompts per training step (each gets ``num_generations`` completions, so the
            rollout batch is always a whole number of groups).
        val_batch_size: prompts per validation / test batch (default: ``batch_size``).
        num_workers: DataLoader workers (generation is cheap; 0 is usually fastest).
    """

    def __init__(self, batch_size: int = 8, val_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1 (prompts per step), got {batch_size}")
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers

    # Lightning merges module and DataModule hparams for the loggers and raises on any shared name
    # with different values (``seed``, ``prompt_format``, ...). The full config is saved next to the
    # logs by LightningCLI anyway, so DataModules keep theirs out of that merge, whatever their
    # subclasses' save_hyperparameters() sets.
    @property
    def _log_hyperparams(self) -> bool:
        return False

    @_log_hyperparams.setter
    def _log_hyperparams(self, value: bool) -> None:
        pass

    # Subclasses override these three.
    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset | None:
        return None

    def test_dataset(self) -> Dataset | None:
        return self.val_dataset()

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=collate_problems,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled per (seed, epoch) and resumable mid-epoch from a checkpoint (datamodules.resumable)."""
        dataset = self.train_dataset()
        if len(dataset) < self.batch_size:  # drop_last: not one batch, and the run would end at once
            raise BadInput(f"data: the training set has {len(dataset)} rows, fewer than data.batch_size="
                             f"{self.batch_size}: not one batch to train on; lower batch_size or add rows")
        return ResumableDataLoader(dataset, batch_size=self.batch_size, sampler=EpochRandomSampler(dataset), drop_last=True,
                                   num_workers=self.num_workers, collate_fn=collate_problems)

    def val_dataloader(self) -> DataLoader | list:
        ds = self.val_dataset()
        return [] if ds is None else self._loader(ds, self.val_batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader | list:
        ds = self.test_dataset()
        return [] if ds is None else self._loader(ds, self.val_batch_size, shuffle=False, drop_last=False)
