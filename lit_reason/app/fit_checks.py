"""Before ``fit`` builds anything: the micro-batch sizes against the data's batch size. Before it
resumes: an explicit ``--ckpt_path`` file is checked before anything loads (one line
naming the file and what is wrong with it: missing, empty, truncated, not a checkpoint, another
module class), and ``--ckpt_path last`` with no checkpoint to find says so in one line."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lit_reason.strategies.atomic_sharded_save import restore_interrupted_swaps
from lit_reason.utils.checkpoint_io import read_checkpoint
from lit_reason.modules.grpo_config import check_batch_sizes
from lit_reason.utils.faults import BadCheckpoint, BadInput

_NAMED = {"last", "best", "hpc"}


def check_ckpt_file(ckpt_path: Any, model_config: Any) -> None:
    """Raise ``BadCheckpoint`` for an unusable checkpoint file. Weights are checked when Lightning
    loads them (lit_reason.utils.checkpoint_io), not here (the tensors are only memory-mapped)."""
    if not ckpt_path or str(ckpt_path) in _NAMED or "://" in str(ckpt_path):
        return
    checkpoint = read_checkpoint(str(ckpt_path), weights_only=True, check_weights=False, mmap=True)
    if "lit_reason" not in checkpoint:
        raise BadCheckpoint(f"checkpoint {ckpt_path} is a Lightning checkpoint but not one of lit-reason (no "
                            "lit_reason state): give a checkpoint written by lit-reason fit")
    saved = str((checkpoint.get("hyper_parameters") or {}).get("_class_path") or "").rsplit(".", 1)[-1]
    wanted = str(getattr(model_config, "class_path", "") or "").rsplit(".", 1)[-1]
    if saved and wanted and saved != wanted:
        raise BadCheckpoint(f"checkpoint {ckpt_path} was written by {saved}, the config trains {wanted}: resume "
                            f"with model.class_path {saved}, or start a new run without --ckpt_path")


def say_if_starting_fresh(trainer: Any, ckpt_path: Any) -> None:
    """``--ckpt_path last`` with nothing to resume: one line saying where it looked (Lightning's own
    warning is easy to miss among the start-up lines)."""
    if str(ckpt_path) != "last":
        return
    if trainer.is_global_zero:  # a sharded checkpoint a kill left aside mid-swap goes back first
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                for path in restore_interrupted_swaps(str(cb.dirpath)):
                    rank_zero_info(f"--ckpt_path last: restored {path}, which a kill had left aside while saving")
    dirs = [str(cb.dirpath) for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    if any(cb._find_last_checkpoints(trainer) for cb in trainer.checkpoint_callbacks
           if isinstance(cb, ModelCheckpoint) and cb.dirpath):
        return
    if not dirs:
        rank_zero_info("--ckpt_path last: no ModelCheckpoint callback, nothing to resume; starting fresh")
    elif any(d == "None" for d in dirs):
        rank_zero_info("--ckpt_path last: the ModelCheckpoint has no dirpath, so each run writes a new "
                       "lightning_logs/version_N and none is found; set its dirpath (docs/fault_tolerance.md); "
                       "starting fresh")
    else:
        rank_zero_info(f"--ckpt_path last: no checkpoint in {', '.join(map(os.fspath, dirs))} yet; starting fresh")


def check_batch_division(model_config: Any, data_config: Any) -> None:
    """``model.minibatch_size`` / ``micro_batch_size`` must divide data.batch_size x num_generations:
    said here, from the parsed config, instead of after the model has loaded (GRPO.on_fit_start)."""
    model_args, data_args = getattr(model_config, "init_args", None), getattr(data_config, "init_args", None)
    needed = ("num_generations", "minibatch_size", "micro_batch_size")
    if model_args is None or data_args is None or not all(hasattr(model_args, k) for k in needed):
        return
    try:
        check_batch_sizes(model_args, getattr(data_args, "batch_size", None))
    except ValueError as err:
        raise BadInput(str(err)) from None
