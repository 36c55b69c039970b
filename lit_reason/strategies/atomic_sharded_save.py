"""Sharded checkpoints (FSDP1 ``state_dict_type: sharded``, FSDP2, DeepSpeed) written atomically.

These strategies write a checkpoint *directory* themselves (a shard file per rank plus metadata),
not through the CheckpointIO plugin, and they write it in place: the new shards overwrite the
old ones in ``last.ckpt/`` one by one, so a kill during a save leaves a directory mixing two
steps, or a truncated shard (unreadable). :func:`make_sharded_saves_atomic` wraps a strategy's
``save_checkpoint`` so that every rank writes into a temporary sibling directory
(``.last.ckpt.tmp-<token>``) in the target directory, fsyncs what it wrote, and only when every
rank is done rank 0 puts it into place:

* no checkpoint there yet: ``rename`` (atomic);
* one there: ``renameat2(RENAME_EXCHANGE)`` swaps the two directories in one step (Linux: ext4,
  xfs, btrfs, tmpfs), then the old one (now at the temporary name) is removed;
* where the filesystem cannot exchange: the old one is renamed aside (``.last.ckpt.old-<token>``),
  the new one renamed into place, then the old one removed. A kill between the two renames leaves
  no ``last.ckpt``, only the complete old one aside: :func:`restore_interrupted_swaps` (run by
  ``lit-reason fit`` before it resumes, and before each save) renames it back.

At every instant the target path holds a complete checkpoint (or, in the last case, can be put
back by a rename), and the previous one is removed only once the new one is in place. A full disk
during the save removes the staged shards and ends in the same one line as a single-file checkpoint.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from lit_reason.utils.checkpoint_io import checkpoint_bytes, is_full_disk, no_space_error

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap the paths ``a`` and ``b`` in one step (Linux ``renameat2``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False  # this filesystem or kernel cannot exchange
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(err)}")


def fsync_tree(path: str) -> None:
    """fsync every file under ``path``, then every directory (bottom up), so a rename of ``path``
    publishes contents that are on disk."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def replace_path(staging: str, target: str, token: str, exchange: Callable[[str, str], bool] = _exchange) -> None:
    """Put the complete ``staging`` directory at ``target``; the old ``target`` (a directory or a
    file) is removed only once the new one is in place."""
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.lexists(target):
        os.rename(staging, target)
    elif exchange(staging, target):
        _remove(staging)  # now the old checkpoint
    else:
        aside = os.path.join(parent, f".{os.path.basename(target)}.old-{token}")
        os.rename(target, aside)
        os.rename(staging, target)
        fsync_dir(parent)
        _remove(aside)
    fsync_dir(parent)


def restore_interrupted_swaps(directory: str) -> list[str]:
    """Put back a checkpoint a kill left aside between the two renames of :func:`replace_path`
    (``.NAME.old-*`` with no ``NAME``), and remove the temporary directories of interrupted saves.
    Returns the paths restored."""
    if not directory or not os.path.isdir(directory):
        return []
    restored = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not name.startswith(".") or ".old-" not in name and ".tmp-" not in name:
            continue
        target_name, kind = name[1:].rsplit(".", 1)[0], name.rsplit(".", 1)[1]
        target = os.path.join(directory, target_name)
        if kind.startswith("old-") and not os.path.lexists(target):
            os.rename(path, target)
            restored.append(target)
        elif kind.startswith(("old-", "tmp-")) and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
    return restored


_DIRECTORY_WRITERS = {"FSDPStrategy", "ModelParallelStrategy", "DeepSpeedStrategy"}


def _kinds(strategy: Any) -> set[str]:
    return {cls.__name__ for cls in type(strategy).__mro__}  # by name: DeepSpeed may not be installed


def writes_sharded(strategy: Any) -> bool:
    """Whether ``strategy.save_checkpoint`` writes a directory itself (not through the CheckpointIO)."""
    kinds = _kinds(strategy)
    if "FSDPStrategy" in kinds:
        return getattr(strategy, "_state_dict_type", "full") == "sharded"
    if "ModelParallelStrategy" in kinds:
        return bool(getattr(strategy, "_save_distributed_checkpoint", True))
    return "DeepSpeedStrategy" in kinds


def make_sharded_saves_atomic(strategy: Any) -> Any:
    """Wrap ``strategy.save_checkpoint`` (once) so a sharded save is staged and swapped into place
    (module docstring). Other strategies (DDP's launcher may pickle the strategy to spawn its
    ranks), and remote ``scheme://`` paths, are left as they are."""
    if not _kinds(strategy) & _DIRECTORY_WRITERS or getattr(strategy.save_checkpoint, "_atomic_sharded", False):
        return strategy
    save = strategy.save_checkpoint

    @functools.wraps(save)
    def atomic_save(checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        if not writes_sharded(strategy) or "://" in str(filepath):
            return save(checkpoint, filepath, storage_options)
        target = str(Path(strategy.broadcast(os.fspath(filepath))).absolute())
        token = strategy.broadcast(uuid.uuid4().hex[:12])  # rank 0's, so every rank stages in one place
        parent = os.path.dirname(target)
        staging = os.path.join(parent, f".{os.path.basename(target)}.tmp-{token}")
        if strategy.is_global_zero:
            os.makedirs(parent, exist_ok=True)
            restore_interrupted_swaps(parent)
        strategy.barrier("atomic_sharded_save.stage")
        try:
            save(checkpoint, staging, storage_options)
            fsync_tree(staging)  # each rank its own shards (and whatever else it sees: harmless)
        except BaseException as err:  # torch's distributed save raises the same on every rank
            if not is_full_disk(err):
                raise
            _remove(staging)  # no partial shards left; the previous checkpoint was never touched
            raise no_space_error(parent, os.path.basename(target), checkpoint_bytes(checkpoint)) from err
        strategy.barrier("atomic_sharded_save.written")
        if strategy.is_global_zero:
            replace_path(staging, target, token)
        strategy.barrier("atomic_sharded_save.replaced")
        return None

    atomic_save._atomic_sharded = True  # type: ignore[attr-defined]
    strategy.save_checkpoint = atomic_save
    return strategy
