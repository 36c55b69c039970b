"""Sharded checkpoints are staged and swapped into place (lit_reason.strategies.atomic_sharded_save):
a kill in the middle of a save leaves the previous checkpoint complete and loadable.

The 2-rank tests kill both FSDP2 (or FSDP1, sharded) ranks (SIGKILL to the process group) while the second save of
``last.ckpt`` is being written, one rank's shard half written (tests/fsdp_grpo_worker.py
``fsdp2_kill``, ``fsdp1_kill``), then read ``last.ckpt`` back with torch.distributed.checkpoint: every shard must
read and hold what the first save wrote (a copy of it). The swap itself is tested here at each step with a
failure injected (a kill at that instant leaves the same files).
"""

import os
import signal

import pytest
import torch

from lit_reason.strategies.atomic_sharded_save import (make_sharded_saves_atomic, replace_path,
                                                       restore_interrupted_swaps, writes_sharded)


def read_sharded(path) -> dict:
    """A distributed checkpoint directory read into one process (fails on a missing or short shard)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = str(path) + ".pt"
    dcp_to_torch_save(str(path), out)
    return torch.load(out, weights_only=False)


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["fsdp2", "fsdp1"])
def test_a_kill_in_the_middle_of_a_sharded_save_leaves_the_previous_checkpoint(tmp_path, strategy):
    from tests.test_fsdp import run_worker

    run_worker(f"{strategy}_kill", tmp_path, returncode=-signal.SIGKILL)
    loaded, first = read_sharded(tmp_path / "last.ckpt"), read_sharded(tmp_path / "first.ckpt")
    weights = loaded["model" if strategy == "fsdp1" else "state_dict"]
    assert set(weights) == set(first["model" if strategy == "fsdp1" else "state_dict"]) and len(weights) > 10
    for name, tensor in weights.items():  # the first save's, not the weights moved by +1
        assert torch.equal(tensor, first["model" if strategy == "fsdp1" else "state_dict"][name]), name
    assert "optimizer_0" in loaded
    assert torch.load(tmp_path / "last.ckpt" / "meta.pt", weights_only=False)["global_step"] == 2
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".last.ckpt.tmp-")]
    assert len(leftovers) == 1  # the interrupted save's staging directory, removed by the next save
    assert restore_interrupted_swaps(str(tmp_path)) == [] and not any(
        p.startswith(".last.ckpt.") for p in os.listdir(tmp_path))


# ---------------------------------------------------------------- the swap, one process
def checkpoint_dir(path, step: int) -> str:
    os.makedirs(path)
    for rank in range(2):
        with open(os.path.join(path, f"__{rank}_0.distcp"), "w") as f:
            f.write(f"step {step} rank {rank}")
    return str(path)


def step_of(path) -> set[str]:
    return {open(os.path.join(path, n)).read().split(" rank")[0] for n in os.listdir(path)}


@pytest.mark.parametrize("can_exchange", [True, False])
def test_the_swap_replaces_a_checkpoint_and_removes_the_old_one_after(tmp_path, can_exchange):
    from lit_reason.strategies.atomic_sharded_save import _exchange

    target = checkpoint_dir(tmp_path / "last.ckpt", 1)
    staging = checkpoint_dir(tmp_path / ".last.ckpt.tmp-a", 2)
    replace_path(staging, target, "a", exchange=_exchange if can_exchange else lambda a, b: False)
    assert step_of(target) == {"step 2"} and sorted(os.listdir(tmp_path)) == ["last.ckpt"]
    # the first save: nothing to replace; a file (a full checkpoint) is replaced by a directory too
    first = checkpoint_dir(tmp_path / ".new.ckpt.tmp-b", 3)
    replace_path(first, str(tmp_path / "new.ckpt"), "b")
    (tmp_path / "full.ckpt").write_text("a full checkpoint")
    replace_path(checkpoint_dir(tmp_path / ".full.ckpt.tmp-c", 4), str(tmp_path / "full.ckpt"), "c",
                 exchange=_exchange if can_exchange else lambda a, b: False)
    assert step_of(tmp_path / "new.ckpt") == {"step 3"} and step_of(tmp_path / "full.ckpt") == {"step 4"}
    assert sorted(os.listdir(tmp_path)) == ["full.ckpt", "last.ckpt", "new.ckpt"]


def test_renameat2_exchanges_on_this_filesystem(tmp_path):
    from lit_reason.strategies.atomic_sharded_save import _exchange

    a, b = checkpoint_dir(tmp_path / "a", 1), checkpoint_dir(tmp_path / "b", 2)
    if not _exchange(a, b):
        pytest.skip("this filesystem cannot exchange: the two-rename path is used")
    assert step_of(a) == {"step 2"} and step_of(b) == {"step 1"}


def test_a_kill_between_the_two_renames_is_restored(tmp_path, monkeypatch):
    """Without an exchange the old checkpoint is renamed aside first: a kill right after leaves no
    last.ckpt, and restore_interrupted_swaps (lit-reason fit --ckpt_path last, each save) puts it back."""
    target = checkpoint_dir(tmp_path / "last.ckpt", 1)
    staging = checkpoint_dir(tmp_path / ".last.ckpt.tmp-a", 2)
    renames = []

    def rename(a, b):
        if renames:
            raise KeyboardInterrupt("killed")  # the second rename never happens
        renames.append((a, b))
        os.replace(a, b)

    monkeypatch.setattr("lit_reason.strategies.atomic_sharded_save.os.rename", rename)
    with pytest.raises(KeyboardInterrupt):
        replace_path(staging, target, "a", exchange=lambda a, b: False)
    monkeypatch.undo()
    assert not os.path.exists(target) and os.path.isdir(tmp_path / ".last.ckpt.old-a")
    assert restore_interrupted_swaps(str(tmp_path)) == [target]
    assert step_of(target) == {"step 1"} and os.listdir(tmp_path) == ["last.ckpt"]  # staging removed too


def test_which_strategies_are_wrapped():
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy

    assert writes_sharded(ModelParallelStrategy())
    assert not writes_sharded(ModelParallelStrategy(save_distributed_checkpoint=False))
    assert writes_sharded(FSDPStrategy(state_dict_type="sharded"))
    assert not writes_sharded(FSDPStrategy()) and not writes_sharded(DDPStrategy())
    strategy = make_sharded_saves_atomic(ModelParallelStrategy())
    wrapped = strategy.save_checkpoint
    assert make_sharded_saves_atomic(strategy).save_checkpoint is wrapped  # once
    import pickle

    ddp = make_sharded_saves_atomic(DDPStrategy())  # untouched: ddp_spawn pickles its strategy
    assert not hasattr(ddp.save_checkpoint, "_atomic_sharded") and pickle.loads(pickle.dumps(ddp))


def test_the_cli_wraps_the_trainers_strategy(tmp_path):
    from lit_reason.app.cli import LitReasonCLI

    cli = LitReasonCLI(args=["--model", "GRPO", "--model.model", "tiny", "--data", "ToyDataModule",
                             "--trainer.strategy.class_path", "lightning.pytorch.strategies.ModelParallelStrategy",
                             "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path),
                             "--trainer.logger", "false"], run=False)
    assert getattr(cli.trainer.strategy.save_checkpoint, "_atomic_sharded", False)


@pytest.mark.parametrize("how", ["oserror", "torch_checkpoint_exception"])
def test_a_full_disk_during_a_sharded_save_is_one_line_and_leaves_the_previous_checkpoint(tmp_path, how):
    """The sharded writer fails with ENOSPC half-way through a shard (directly, or as torch's
    distributed save reports it: a CheckpointException holding each failed rank's error)."""
    import errno

    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch.distributed.checkpoint.api import CheckpointException

    from lit_reason.utils.faults import CheckpointWriteError

    target = checkpoint_dir(tmp_path / "last.ckpt", step=1)

    def full_disk_save(checkpoint, path, storage_options=None):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "__0_0.distcp"), "w") as f:
            f.write("step 2 rank 0, half")
        full = OSError(errno.ENOSPC, "No space left on device")
        raise full if how == "oserror" else CheckpointException("save failed", {1: (full, None)})

    strategy = ModelParallelStrategy()
    strategy.save_checkpoint = full_disk_save
    strategy = make_sharded_saves_atomic(strategy)
    weights = {"state_dict": {"w": torch.zeros(1024, 256)}}  # 1 MiB
    with pytest.raises(CheckpointWriteError, match=rf"no space left on the device of {tmp_path} to write checkpoint "
                                                   r"last.ckpt: it needs about 1 MiB, \d+ MiB are free") as raised:
        strategy.save_checkpoint(weights, target)
    assert "\n" not in str(raised.value)
    assert os.listdir(tmp_path) == ["last.ckpt"] and step_of(target) == {"step 1"}  # no staging left, old intact

    strategy = ModelParallelStrategy()
    strategy.save_checkpoint = lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied"))
    with pytest.raises(PermissionError):  # any other failure is not called a full disk
        make_sharded_saves_atomic(strategy).save_checkpoint(weights, target)
