"""Export of the trained policy: a checkpoint or a finished fit becomes a from_pretrained directory."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from callbacks.policy_export import PolicyExport
from datamodules.toy import ToyDataModule
from lit_reason.app.export import main
from lit_reason.models.export import export_checkpoint
from lit_reason.modules import GRPO


def trained(tmp_path, callbacks=(), **kwargs) -> tuple[GRPO, L.Trainer]:
    torch.manual_seed(0)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=6, lr=1e-2, **kwargs)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path, callbacks=list(callbacks))
    trainer.fit(module, datamodule=ToyDataModule(batch_size=2, val_size=0))
    return module, trainer


def same_logits(module: GRPO, directory) -> None:
    loaded = AutoModelForCausalLM.from_pretrained(directory)
    # The presets' character tokenizer must be loaded by its own class: AutoTokenizer picks
    # Qwen2Tokenizer from config.json, whose pre-tokenizer drops spaces (see the xfail below).
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    ids = tokenizer(["Write the letter a many times.", "3+4="], padding=True, return_tensors="pt")
    assert ids["input_ids"].tolist() == module.tokenizer(["Write the letter a many times.", "3+4="], padding=True)["input_ids"]
    with torch.no_grad():
        expected = module.policy.eval()(**ids).logits
        torch.testing.assert_close(loaded(**ids).logits, expected, rtol=0, atol=1e-6)


def test_checkpoint_export_loads_with_from_pretrained_and_gives_identical_logits(tmp_path):
    module, trainer = trained(tmp_path, beta=0.1)  # beta: the checkpoint also holds a reference copy
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    initial = GRPO(model="tiny").policy  # a fresh random init differs, so equality means the trained weights
    assert not torch.equal(initial.model.embed_tokens.weight, module.policy.model.embed_tokens.weight)
    assert main(["--ckpt", str(ckpt), "--out", str(tmp_path / "hf")]) == 0
    same_logits(module, tmp_path / "hf")


def test_export_in_bfloat16_and_bad_inputs(tmp_path, capsys):
    module, trainer = trained(tmp_path)
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    export_checkpoint(str(ckpt), str(tmp_path / "bf16"), dtype="bfloat16")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16
    torch.testing.assert_close(loaded.model.embed_tokens.weight.float(),
                               module.policy.model.embed_tokens.weight.to(torch.bfloat16).float(), rtol=0, atol=0)
    assert module.policy.dtype == torch.float32  # the live policy is not cast
    assert main(["--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    torch.save({"state_dict": {"net.weight": torch.zeros(1)}, "hyper_parameters": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="no 'policy.\\*' weights"):
        export_checkpoint(str(tmp_path / "other.ckpt"), str(tmp_path / "y"))


def test_policy_export_callback_writes_at_fit_end(tmp_path):
    callback = PolicyExport(dirpath=str(tmp_path / "final"))
    module, _ = trained(tmp_path, callbacks=[callback])
    assert callback.saved_to == str(tmp_path / "final")
    same_logits(module, tmp_path / "final")


def test_exported_char_tokenizer_reloads_through_load_policy(tmp_path):
    """transformers 5's AutoTokenizer picks Qwen2Tokenizer for a qwen2 config.json and drops the
    character tokenizer's spaces; lit_reason.models.policy.load_tokenizer honours the saved class."""
    from lit_reason.models.policy import load_tokenizer

    GRPO(model="tiny").tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    assert load_tokenizer(str(tmp_path))("a b")["input_ids"] == [69, 4, 70]


def test_export_of_a_char_tokenizer_preset_says_how_to_load_it(tmp_path, capsys):
    """AutoTokenizer cannot load it without losing spaces (checked below), so the export says how."""
    from transformers import AutoTokenizer

    module, trainer = trained(tmp_path)
    ckpt = tmp_path / "c.ckpt"
    trainer.save_checkpoint(ckpt)
    with pytest.warns(UserWarning, match=r"PreTrainedTokenizerFast.from_pretrained\(<dir>\)"):
        assert main(["--ckpt", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    assert "PreTrainedTokenizerFast.from_pretrained(<dir>)" in (tmp_path / "out" / "README.md").read_text()
    said = PreTrainedTokenizerFast.from_pretrained(tmp_path / "out")
    assert said.decode(said("a b  c")["input_ids"]) == "a b  c"
    auto = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert auto.decode(auto("a b  c")["input_ids"]) != "a b  c"  # why the note exists; drop it when this changes
