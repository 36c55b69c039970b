"""LoRA checkpoints of a pretrained base hold only what trains (lit_reason.models.lora_checkpoint):
smaller files, the same resumed run, a clear line when the base changed, the same export."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM

from datamodules.toy import ToyDataModule
from lit_reason.models.export import MERGED_DIR, export_checkpoint
from lit_reason.models.lora_checkpoint import RECORD, base_fingerprint, same_fingerprint
from lit_reason.modules import GRPO
from lit_reason.models.policy import load_policy
from tests.test_resume import assert_same_after, assert_same_state, run

pytest.importorskip("peft")

LORA = {"r": 4, "alpha": 8}


@pytest.fixture
def pretrained(tmp_path):
    """The tiny preset saved as a pretrained directory: a base the run re-reads from disk."""
    torch.manual_seed(0)
    loaded = load_policy("tiny")
    loaded.model.save_pretrained(tmp_path / "base")
    loaded.tokenizer.save_pretrained(tmp_path / "base")
    return str(tmp_path / "base")


def module_of(model: str, **lora) -> GRPO:
    return GRPO(model=model, num_generations=2, max_new_tokens=6, lr=1e-2, lr_schedule="cosine", warmup_steps=2,
                beta=0.1, entropy_coef=0.1, lora={**LORA, **lora})


def saved(module: GRPO, path) -> dict:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=path.parent)
    trainer.fit(module, datamodule=ToyDataModule(batch_size=2, val_size=0))
    trainer.save_checkpoint(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def test_fingerprint_by_hand():
    tensors = [torch.tensor([1.0, -2.0]), torch.tensor([[3.0]], dtype=torch.bfloat16)]
    assert base_fingerprint(tensors) == [2.0, 14.0, 3.0]  # 1 - 2 + 3; 1 + 4 + 9; 3 elements
    assert same_fingerprint([2.0, 14.0, 3.0], [2.0 + 1e-12, 14.0, 3.0])  # summation order only
    assert not same_fingerprint([2.0, 14.0, 3.0], [2.0, 14.0 + 1e-3, 3.0])
    assert not same_fingerprint([2.0, 14.0, 3.0], [2.0, 14.0, 4.0])


def test_a_pretrained_base_is_left_out_and_a_preset_or_save_base_kept(pretrained, tmp_path):
    torch.manual_seed(0)
    module = module_of(pretrained)
    slim = saved(module, tmp_path / "slim.ckpt")
    trained = {"policy." + n for n, p in module.policy.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in k for k in trained)
    assert set(slim["state_dict"]) == trained  # the adapters and nothing else
    record = slim["lit_reason"][RECORD]
    frozen = {k: v for k, v in module.state_dict().items() if k not in trained}
    assert set(record["keys"]) == set(frozen) and record["model"] == pretrained
    assert record["fingerprint"] == base_fingerprint(frozen[k] for k in record["keys"])
    torch.manual_seed(0)
    full = saved(module_of(pretrained, save_base=True), tmp_path / "full.ckpt")
    assert set(full["state_dict"]) == set(module.state_dict()) and RECORD not in full["lit_reason"]
    size = lambda name: (tmp_path / name).stat().st_size  # noqa: E731
    assert size("slim.ckpt") < 0.5 * size("full.ckpt"), (size("slim.ckpt"), size("full.ckpt"))
    torch.manual_seed(0)
    preset = saved(module_of("tiny"), tmp_path / "preset.ckpt")  # only the seed would rebuild a preset's base
    assert set(preset["state_dict"]) == set(module.state_dict())


def adapters(module):
    return [p for n, p in module.named_parameters() if "lora_" in n]


def test_resumed_from_a_slim_checkpoint_matches_the_uninterrupted_run(pretrained, tmp_path):
    def make_data():
        return ToyDataModule(train_size=8, val_size=0, batch_size=2)

    module_a, rec_a, t_a = run(tmp_path / "a", lambda: module_of(pretrained), make_data)
    run(tmp_path / "b", lambda: module_of(pretrained), make_data, kill_at=4)
    assert "lora_base" in torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", weights_only=True)["lit_reason"]
    module_b, rec_b, t_b = run(tmp_path / "b", lambda: module_of(pretrained), make_data, resume=True, perturbed=adapters)
    assert_same_after(rec_a, rec_b, start=4)
    assert_same_state(module_a, t_a, module_b, t_b)  # adapters, base, AdamW moments, schedule


def test_a_changed_base_stops_the_resume_with_one_line(pretrained, tmp_path):
    torch.manual_seed(0)
    saved(module_of(pretrained), tmp_path / "slim.ckpt")
    base = AutoModelForCausalLM.from_pretrained(pretrained)
    with torch.no_grad():
        base.model.norm.weight.mul_(1.01)  # one small tensor of the base differs
    base.save_pretrained(pretrained)
    with pytest.raises(ValueError) as err:
        GRPO.load_from_checkpoint(tmp_path / "slim.ckpt", map_location="cpu")
    message = str(err.value)
    assert "\n" not in message and "not the one it was trained on" in message and pretrained in message


def test_export_of_a_slim_checkpoint_reproduces_the_adapted_logits(pretrained, tmp_path):
    torch.manual_seed(0)
    module = module_of(pretrained)
    saved(module, tmp_path / "slim.ckpt")
    ids = module.tokenizer(["Write the letter a many times.", "3+4="], padding=True, return_tensors="pt")
    with torch.no_grad():
        adapted = module.policy.eval()(**ids).logits
    export_checkpoint(str(tmp_path / "slim.ckpt"), str(tmp_path / "out"), merged=True)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / MERGED_DIR)
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, adapted, rtol=0, atol=1e-5)
