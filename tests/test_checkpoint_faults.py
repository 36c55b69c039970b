"""Checkpoint faults: atomic writes on any filesystem layout, a full disk, non-finite weights, bad
checkpoint files and changed configs on resume (lit_reason.utils.checkpoint_io,
lit_reason.app.fit_checks, lit_reason.modules.resume_config)."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.toy import ToyDataModule
from lit_reason.app.fit_checks import check_ckpt_file
from lit_reason.modules import GRPO
from lit_reason.modules.resume_config import changed_settings, check_resume, frozen_changes, state_dict_mismatch
from lit_reason.utils import checkpoint_io
from lit_reason.utils.checkpoint_io import AtomicCheckpointIO, checkpoint_bytes, nonfinite_tensor
from lit_reason.utils.faults import EXIT_CHECKPOINT_WRITE, BadCheckpoint, CheckpointWriteError, TrainingDiverged

REPO = Path(__file__).resolve().parent.parent


def ckpt(value: float, n: int = 1000) -> dict:
    return {"state_dict": {"w": torch.full((n,), value)}, "global_step": int(value), "lit_reason": {}}


# ------------------------------------------------------------------ writing
def test_write_goes_through_a_temp_file_in_the_target_directory(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(checkpoint_io.os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    target = tmp_path / "ckpts" / "last.ckpt"  # the directory does not exist yet
    AtomicCheckpointIO().save_checkpoint(ckpt(1.0), target)
    AtomicCheckpointIO().save_checkpoint(ckpt(2.0), target)
    assert [Path(b) for _, b in renames] == [target, target]
    assert all(Path(a).parent == target.parent and Path(a).name.startswith(".last.ckpt.") for a, _ in renames)
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temp file left
    assert torch.load(target)["global_step"] == 2


def test_full_disk_is_one_line_no_partial_file_previous_intact(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(ckpt(1.0), target)

    def half_then_enospc(obj, f):
        f.write(b"x" * 1000)  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", half_then_enospc)
    with pytest.raises(CheckpointWriteError) as err:
        AtomicCheckpointIO().save_checkpoint(ckpt(2.0, n=2**20), target)  # 4 MiB of float32
    message = str(err.value)
    assert "\n" not in message and err.value.exit_code == EXIT_CHECKPOINT_WRITE == 4
    assert message.startswith(f"no space left on the device of {tmp_path} to write checkpoint last.ckpt: it needs "
                              "about 4 MiB, ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    monkeypatch.undo()
    assert torch.load(target)["global_step"] == 1


def test_checkpoint_bytes_counts_tensor_bytes():
    assert checkpoint_bytes({"a": torch.zeros(10), "b": [torch.zeros(3, dtype=torch.float16), 7], "c": "x"}) == 46


def test_nonfinite_weights_are_never_written(tmp_path):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(ckpt(1.0), target)
    bad = ckpt(1.0)
    bad["state_dict"]["w"][3] = float("nan")
    assert nonfinite_tensor(bad["state_dict"]) == "w"
    with pytest.raises(TrainingDiverged, match="weights are not finite"):
        AtomicCheckpointIO().save_checkpoint(bad, target)
    assert torch.equal(torch.load(target)["state_dict"]["w"], torch.full((1000,), 1.0))


def _other_filesystem_dir() -> Path | None:
    """A directory on another filesystem than the system temp directory: /dev/shm (a tmpfs) when it is one."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tempfile.gettempdir()).st_dev:
        return shm
    return None


WRITER = """
import sys, torch
from lit_reason.utils.checkpoint_io import AtomicCheckpointIO
io, i = AtomicCheckpointIO(), 0
print("ready", flush=True)
while True:
    i += 1
    io.save_checkpoint({"state_dict": {"w": torch.full((2_000_000,), float(i))}, "global_step": i}, sys.argv[1])
"""


@pytest.mark.integration
def test_kill_during_writes_to_another_filesystem_leaves_a_loadable_checkpoint(tmp_path):
    """The checkpoint directory on a tmpfs, the system temp dir elsewhere (the cluster layout where
    Lightning's staged move is a copy): SIGKILL at random instants of a writing loop; every time
    last.ckpt loads and holds one complete version."""
    other = _other_filesystem_dir()
    if other is None:
        pytest.skip("no writable directory on another filesystem than the temp directory")
    directory = Path(tempfile.mkdtemp(dir=other))
    target = directory / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    try:
        for _ in range(5):
            proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=env, stdout=subprocess.PIPE)
            assert proc.stdout.readline().strip() == b"ready"
            while not target.exists():
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
            proc.kill()
            proc.wait()
            saved = torch.load(target)
            w = saved["state_dict"]["w"]
            assert w.shape == (2_000_000,) and torch.all(w == saved["global_step"])
    finally:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


# ------------------------------------------------------------------ reading bad files
@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory) -> Path:
    """A real checkpoint of a one-step tiny GRPO run."""
    root = tmp_path_factory.mktemp("real")
    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        plugins=[AtomicCheckpointIO()], default_root_dir=root,
                        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", save_last=True)])
    trainer.fit(GRPO(model="tiny", num_generations=2, max_new_tokens=4), datamodule=ToyDataModule(train_size=4, batch_size=2))
    return root / "ckpt" / "last.ckpt"


def _bad_files(tmp_path: Path, real: Path) -> dict[str, tuple[Path, str]]:
    data = real.read_bytes()
    files = {
        "truncated": (data[: len(data) // 2], "cannot be read: truncated, corrupt or not a torch checkpoint"),
        "empty": (b"", "is empty (0 bytes)"),
        "garbage": (bytes(random.Random(1).getrandbits(8) for _ in range(4096)), "cannot be read"),
        "text": (b"model: tiny\nlr: 1e-6\n", "cannot be read"),
    }
    out = {}
    for name, (content, why) in files.items():
        (tmp_path / f"{name}.ckpt").write_bytes(content)
        out[name] = (tmp_path / f"{name}.ckpt", why)
    (tmp_path / "dir.ckpt").mkdir()
    out["directory"] = (tmp_path / "dir.ckpt", "is a directory, not a checkpoint file")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.ckpt")
    out["foreign"] = (tmp_path / "foreign.ckpt", "is not a Lightning checkpoint of this project (no state_dict")
    out["missing"] = (tmp_path / "nothing.ckpt", "no such file")
    return out


def test_bad_checkpoint_files_are_one_line_naming_the_file(tmp_path, real_ckpt):
    for name, (path, why) in _bad_files(tmp_path, real_ckpt).items():
        with pytest.raises(BadCheckpoint) as err:
            check_ckpt_file(str(path), SimpleNamespace(class_path="lit_reason.modules.grpo.GRPO"))
        assert str(path) in str(err.value) and why in str(err.value), (name, str(err.value))
        assert "\n" not in str(err.value)


def test_foreign_lightning_checkpoint_other_class_and_nonfinite_weights(tmp_path, real_ckpt):
    saved = torch.load(real_ckpt, weights_only=False)
    grpo = SimpleNamespace(class_path="lit_reason.modules.grpo.GRPO")
    check_ckpt_file(str(real_ckpt), grpo)  # the good one passes
    foreign = {k: v for k, v in saved.items() if k != "lit_reason"}
    torch.save(foreign, tmp_path / "plain_lightning.ckpt")
    with pytest.raises(BadCheckpoint, match="is a Lightning checkpoint but not one of lit-reason"):
        check_ckpt_file(str(tmp_path / "plain_lightning.ckpt"), grpo)
    other = {**saved, "hyper_parameters": {**saved["hyper_parameters"], "_class_path": "lit_reason.modules.Intuitor"}}
    torch.save(other, tmp_path / "intuitor.ckpt")
    with pytest.raises(BadCheckpoint, match="was written by Intuitor, the config trains GRPO"):
        check_ckpt_file(str(tmp_path / "intuitor.ckpt"), grpo)
    # written without checksums (before they existed, or by another writer): ours refuses non-finite weights
    nan = {**{k: v for k, v in saved.items() if k != checkpoint_io.CHECKSUMS_KEY},
           "state_dict": {k: v.clone() for k, v in saved["state_dict"].items()}}
    name = next(iter(nan["state_dict"]))
    nan["state_dict"][name].view(-1)[0] = float("inf")
    torch.save(nan, tmp_path / "nan.ckpt")
    check_ckpt_file(str(tmp_path / "nan.ckpt"), grpo)  # only mapped here; refused where Lightning loads it:
    with pytest.raises(BadCheckpoint, match=rf"nan.ckpt has non-finite weights \({name}\)"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "nan.ckpt")


def test_checksums_are_crc32_of_each_tensors_bytes():
    import zlib

    w = torch.tensor([1.0, -2.0], dtype=torch.float32)
    sums = checkpoint_io.tensor_checksums({"state_dict": {"w": w}, "optimizer_states": [{"state": {0: {"m": w[:1]}}}],
                                           "global_step": 3})
    assert sums == {"state_dict/w": zlib.crc32(bytes.fromhex("0000803f000000c0")),  # 1.0, -2.0 little-endian
                    "optimizer_states/0/state/0/m": zlib.crc32(bytes.fromhex("0000803f"))}


def flip_a_byte_in_a_finite_weight(source: Path, target: Path) -> str:
    """Copy ``source`` with the lowest byte of one float32 weight XOR-ed (a mantissa bit: still
    finite, still loads); returns the weight's name."""
    import zipfile

    data = bytearray(source.read_bytes())
    original = torch.load(source, weights_only=False)["state_dict"]
    name = "policy.model.embed_tokens.weight"
    with zipfile.ZipFile(source) as archive:  # torch stores each tensor's storage as an uncompressed entry
        for info in archive.infolist():
            if "/data/" not in info.filename:
                continue
            header = data[info.header_offset: info.header_offset + 30]
            start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + \
                int.from_bytes(header[28:30], "little")
            trial = bytearray(data)
            trial[start + 4 * 7] ^= 0x01
            target.write_bytes(trial)
            flipped = torch.load(target, weights_only=False)["state_dict"]
            if not torch.equal(flipped[name], original[name]):
                assert torch.isfinite(flipped[name]).all()
                return name
    raise AssertionError(f"no storage of {name} found")


def test_flipped_bytes_in_a_finite_weight_are_one_line_before_training(tmp_path, real_ckpt, capsys):
    """torch.load checks nothing: the flipped file loads (and used to train on); the checksum
    written with it names the file and the tensor."""
    from tests.test_fault_cli import fit

    assert checkpoint_io.CHECKSUMS_KEY in torch.load(real_ckpt, weights_only=False)
    name = flip_a_byte_in_a_finite_weight(real_ckpt, tmp_path / "flipped.ckpt")
    code, lines = fit(capsys, "--model.num_generations=2", "--model.max_new_tokens=4", "--data.batch_size=2",
                      "--data.train_size=4", "--trainer.max_steps=2", f"--trainer.default_root_dir={tmp_path}",
                      f"--ckpt_path={tmp_path}/flipped.ckpt")
    assert code == 2 and lines == [f"error: checkpoint {tmp_path}/flipped.ckpt is corrupt: the bytes of "
                                   f"state_dict/{name} differ from the checksum written with it (a disk or copy "
                                   "error); resume from an earlier checkpoint"], lines
    AtomicCheckpointIO().load_checkpoint(real_ckpt)  # the intact file passes the same check


def test_fit_refuses_a_truncated_last_checkpoint_before_training(tmp_path, real_ckpt):
    (tmp_path / "last.ckpt").write_bytes(real_ckpt.read_bytes()[:5000])
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, plugins=[AtomicCheckpointIO()])
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4)
    with pytest.raises(BadCheckpoint, match="last.ckpt .* cannot be read"):
        trainer.fit(module, datamodule=ToyDataModule(train_size=4, batch_size=2), ckpt_path=str(tmp_path / "last.ckpt"))
    assert trainer.global_step == 0


# ------------------------------------------------------------------ changed configs
def test_changed_and_frozen_settings_by_hand():
    saved = {"model": "tiny", "lr": 1e-6, "beta": 0.0, "lora": None, "_class_path": "x.GRPO", "num_generations": 4}
    now = {"model": "tiny", "lr": 2e-6, "beta": 0.0, "lora": None, "num_generations": 8, "divergence": None}
    assert changed_settings(saved, now, "model") == ["model.divergence unset -> None", "model.lr 1e-06 -> 2e-06",
                                                     "model.num_generations 4 -> 8"]
    assert frozen_changes(saved, now) == []
    assert frozen_changes(saved, {**now, "model": "smollm2-135m-instruct", "beta": 0.04}) == [
        "model.model 'tiny' -> 'smollm2-135m-instruct'", "model.beta 0.0 -> 0.04 (the KL reference appears)"]
    lora = {"r": 8, "target_modules": ["q_proj", "v_proj"], "alpha": 16}
    assert frozen_changes({**saved, "lora": lora}, {**now, "lora": {**lora, "alpha": 32}}) == []  # alpha may change
    assert frozen_changes({**saved, "lora": lora}, {**now, "lora": {**lora, "r": 16}}) == [
        "model.lora (r, target_modules) (8, ['q_proj', 'v_proj']) -> (16, ['q_proj', 'v_proj'])"]
    assert state_dict_mismatch({"a": 1, "b": 2}, {"a": 1, "c": 3}) == "1 weights missing (e.g. ['c']), 1 unexpected (e.g. ['b'])"


def test_resume_with_changed_lr_warns_once_and_applies_the_new_lr(tmp_path, real_ckpt):
    L.seed_everything(0)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4, lr=5e-3)  # the checkpoint has 1e-6
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        enable_checkpointing=False, plugins=[AtomicCheckpointIO()])
    with pytest.warns(UserWarning, match=r"with 1 changed setting\(s\), the config's values apply: model.lr 1e-06 -> 0.005"):
        trainer.fit(module, datamodule=ToyDataModule(train_size=4, batch_size=2), ckpt_path=str(real_ckpt))
    assert trainer.global_step == 2
    assert trainer.optimizers[0].param_groups[0]["lr"] == 5e-3
    assert trainer.lr_scheduler_configs[0].scheduler.base_lrs == [5e-3]


def test_resume_with_a_frozen_change_stops_in_one_line(tmp_path, real_ckpt):
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4, beta=0.04)
    with pytest.raises(BadCheckpoint, match=r"cannot resume under this config: model.beta 0.0 -> 0.04 \(the KL reference appears\)"):
        check_resume(module, torch.load(real_ckpt, weights_only=False))
