"""Checkpoints written atomically and read with one-line errors (the CLI installs this plugin).

Writing: Lightning's ``TorchCheckpointIO`` writes through fsspec, whose local "transaction" stages
the file in the system temp directory and moves it into place; when the checkpoint directory is on
another filesystem (local /tmp, checkpoints on shared storage: the usual cluster layout) the move
is a copy, and a kill during it leaves a truncated ``last.ckpt``. Here the checkpoint is written to
a temporary file *in the target directory*, flushed, fsynced and renamed over the old one
(``os.replace`` is atomic within a filesystem), then the directory is fsynced: at any instant the
path holds either the previous complete checkpoint or the new one. A full disk removes the partial
file and ends in one line naming the directory and the space needed. Weights that are not finite
are never written (the previous checkpoint stays).

Reading: a missing, empty, truncated, foreign or non-finite file is a ``BadCheckpoint`` naming the
file and what is wrong with it, instead of a 20-80 line traceback from ``torch.load``.

Checksums: torch's zip format stores tensors uncompressed and unchecked, so flipped bytes that
still decode to finite numbers load silently (and surface later, e.g. as NaN probabilities in
sampling). Each write stores a CRC-32 of every tensor's bytes (weights and optimizer state) under
``CHECKSUMS_KEY``; each read recomputes them and names the first tensor that differs. CRC-32
catches every flipped bit or short burst, at about 1.7 GB/s (benchmarks/checkpoint_checksum.py).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import zlib
from typing import Any, Callable

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lit_reason.utils.faults import BadCheckpoint, CheckpointWriteError, TrainingDiverged

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def nonfinite_tensor(state_dict: Any) -> str | None:
    """The name of the first floating-point tensor with a NaN or inf in ``state_dict``, or None."""
    for name, value in (state_dict or {}).items() if isinstance(state_dict, dict) else ():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() \
                and not bool(torch.isfinite(value).all()):
            return name
    return None


CHECKSUMS_KEY = "lit_reason_crc32"


def tensor_checksums(tree: Any, prefix: str = "") -> dict[str, int]:
    """CRC-32 of the bytes of every tensor in ``tree`` (nested dicts / lists), by its path (``a/b/0``)."""
    if isinstance(tree, torch.Tensor):
        flat = tree.detach().reshape(-1)
        data = flat.cpu().contiguous().view(torch.uint8).numpy() if flat.numel() else b""
        return {prefix: zlib.crc32(data)}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    sums: dict[str, int] = {}
    for key, value in items:
        if key != CHECKSUMS_KEY:
            sums.update(tensor_checksums(value, f"{prefix}/{key}" if prefix else str(key)))
    return sums


def checksum_mismatch(checkpoint: dict[str, Any]) -> str | None:
    """The path of the first tensor whose bytes differ from the checksum stored at save time; None
    when all match or the checkpoint has no checksums (written before they were added)."""
    stored = checkpoint.get(CHECKSUMS_KEY)
    if not isinstance(stored, dict):
        return None
    now = tensor_checksums(checkpoint)
    return next((path for path, crc in stored.items() if now.get(path) != crc), None)


def checkpoint_bytes(checkpoint: Any) -> int:
    """About the size of ``checkpoint`` on disk: the bytes of its tensors (the rest is small)."""
    if isinstance(checkpoint, torch.Tensor):
        return checkpoint.numel() * checkpoint.element_size()
    if isinstance(checkpoint, dict):
        return sum(checkpoint_bytes(v) for v in checkpoint.values())
    if isinstance(checkpoint, (list, tuple)):
        return sum(checkpoint_bytes(v) for v in checkpoint)
    return 0


def is_full_disk(err: BaseException) -> bool:
    """Whether ``err``, its causes, or a rank's failure inside torch's distributed
    ``CheckpointException`` (its ``failures``: rank -> (exception, trace)) is a full disk or quota."""
    stack, seen = [err], set()
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return True
        failures = getattr(e, "failures", None)
        ranks = [f[0] if isinstance(f, tuple) else f for f in failures.values()] if isinstance(failures, dict) else []
        stack += [e.__cause__, e.__context__, *ranks]
    return False


def no_space_error(directory: str, name: str, need_bytes: int) -> CheckpointWriteError:
    """The one line for a checkpoint that did not fit: the directory, what it needs and what is free."""
    need, free = need_bytes / 2**20, shutil.disk_usage(directory).free / 2**20
    return CheckpointWriteError(
        f"no space left on the device of {directory} to write checkpoint {name}: it needs about {need:.0f} MiB, "
        f"{free:.0f} MiB are free; free space or point the checkpoint dirpath elsewhere (the previous checkpoint "
        "is intact)")


def atomic_torch_save(checkpoint: dict[str, Any], path: str) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, rename over ``path``, fsync the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if is_full_disk(err):
            raise no_space_error(directory, os.path.basename(path), checkpoint_bytes(checkpoint)) from err
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_checkpoint(path: str, map_location: Any = "cpu", weights_only: bool | None = None,
                    check_weights: bool = True, mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` of a Lightning checkpoint file, or ``BadCheckpoint`` saying what is wrong with it.
    ``mmap``: map the tensors instead of reading them (a cheap look at the structure)."""
    if not os.path.exists(path):
        raise BadCheckpoint(f"checkpoint {path}: no such file (--ckpt_path last finds the newest last.ckpt "
                            "of the ModelCheckpoint dirpath)")
    if os.path.isdir(path):
        raise BadCheckpoint(f"checkpoint {path} is a directory, not a checkpoint file (a sharded checkpoint "
                            "loads only under the strategy that wrote it)")
    size = os.path.getsize(path)
    if size == 0:
        raise BadCheckpoint(f"checkpoint {path} is empty (0 bytes): an interrupted copy? use an earlier checkpoint")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - every unreadable file is the same user-facing problem
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise BadCheckpoint(f"checkpoint {path} ({size} bytes) cannot be read: truncated, corrupt or not a torch "
                            f"checkpoint ({type(err).__name__}: {reason})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        keys = sorted(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise BadCheckpoint(f"checkpoint {path} is not a Lightning checkpoint of this project (no state_dict; "
                            f"found {keys})")
    bad = checksum_mismatch(checkpoint) if check_weights else None
    if bad is not None:
        raise BadCheckpoint(f"checkpoint {path} is corrupt: the bytes of {bad} differ from the checksum written "
                            "with it (a disk or copy error); resume from an earlier checkpoint")
    bad = nonfinite_tensor(checkpoint["state_dict"]) if check_weights else None
    if bad is not None:
        raise BadCheckpoint(f"checkpoint {path} has non-finite weights ({bad}): it was written after the run "
                            "diverged; resume from an earlier checkpoint")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic local writes, tensor checksums and one-line errors on bad
    files (remote ``scheme://`` paths keep Lightning's fsspec writer, with the checksums)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        bad = nonfinite_tensor(checkpoint.get("state_dict"))
        if bad is not None:
            raise TrainingDiverged(f"training diverged: the weights are not finite ({bad}); refused to write "
                                   f"{path}, the previous checkpoint is intact: lower model.lr")
        checkpoint = {**checkpoint, CHECKSUMS_KEY: tensor_checksums(checkpoint)}
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, str(path))
        return None

    def load_checkpoint(self, path: Any, map_location: Callable | Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return read_checkpoint(str(path), map_location, weights_only)
