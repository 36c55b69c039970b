"""LoRA through peft (model.lora), on the tiny preset: what trains, the reference, export, resume, errors."""

from __future__ import annotations

import sys

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM

from callbacks.policy_export import PolicyExport
from datamodules.toy import ToyDataModule
from lit_reason.app.cli import main as cli_main
from lit_reason.models.export import MERGED_DIR, export_checkpoint
from lit_reason.models.lora import LoraSettings
from lit_reason.modules import GRPO, HRPO, NTHR, SFT, Intuitor
from lit_reason.models.policy import load_policy
from tests.test_resume import assert_same_after, assert_same_state, run, toy_module

peft = pytest.importorskip("peft")

LORA = {"r": 4, "alpha": 8}
#: lr and an entropy bonus large enough that the adapters move in two steps whatever the rewards
FAST = dict(model="tiny", num_generations=2, max_new_tokens=6, lr=3e-2, entropy_coef=0.1)


def fit(module, steps=2, callbacks=(), tmp_path=None, **trainer_kwargs):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=list(callbacks), default_root_dir=tmp_path, **trainer_kwargs)
    trainer.fit(module, datamodule=ToyDataModule(batch_size=2, val_size=0))
    return trainer


def adapter_names(module) -> set[str]:
    return {n for n, _ in module.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("cls, extra", [(GRPO, {}), (Intuitor, {}), (NTHR, {}), (HRPO, {"delimiter": ""}), (SFT, {})],
                         ids=lambda v: getattr(v, "__name__", ""))
def test_only_adapters_train_in_every_module(cls, extra):
    args = {"model": "tiny", "lr": 3e-2, "lora": LORA, **extra}
    if cls is not SFT:
        args.update(num_generations=2, max_new_tokens=6, entropy_coef=0.1)
    torch.manual_seed(0)
    module = cls(**args)
    gate = {n for n, _ in module.named_parameters() if n.startswith("gate.")}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert adapter_names(module) and trainable == adapter_names(module) | gate
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for n, p in module.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    fit(module)
    after = dict(module.named_parameters())
    frozen = [n for n in before if n not in trainable]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)  # the base never moves
    moved = {n for n in trainable if not torch.equal(before[n], after[n])}
    assert any("lora_B" in n for n in moved), "the adapters did not train"
    if cls is HRPO:
        assert [len(g["params"]) for g in module.optimizers().param_groups] == [len(adapter_names(module)), 4, 1]


def test_reference_is_the_frozen_base_with_adapters_off_and_no_copy():
    torch.manual_seed(0)
    base = load_policy("tiny").model.eval()
    torch.manual_seed(0)
    module = GRPO(**FAST, beta=0.1, lora=LORA)
    keys = set(module.state_dict())
    assert not any(k.startswith("ref_model") for k in keys)  # no second copy
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in base.parameters()) + sum(
        p.numel() for n, p in module.named_parameters() if "lora_" in n)
    fit(module)
    module.policy.train()  # the reference must not depend on the policy's mode (nor change it)
    rollout = module.generate(_problems(), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_logits, _ = module.reference_logits(rollout)
        base_logits, _ = GRPO.policy_logits(module, base, rollout)
        module.policy.eval()
        adapted, _ = GRPO.policy_logits(module, module.policy, rollout)
        module.policy.train()
        used = module.old_policy_pass(rollout, need_old=False, need_ref=True)["ref_logps"]  # what the KL term reads
        frozen = module.completion_scores(base, rollout, plain_ids=True).logps
    assert module.policy.training is True
    assert torch.equal(ref_logits, base_logits)  # bit for bit: same weights, same kernels
    assert torch.equal(used, frozen)
    assert (adapted - base_logits).abs().max() > 1e-4  # and the adapters do change the policy


def _problems():
    data = ToyDataModule(batch_size=2, val_size=0)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def test_merged_export_reproduces_the_adapted_logits(tmp_path):
    torch.manual_seed(0)
    module = GRPO(**FAST, lora=LORA)
    callback = PolicyExport(dirpath=str(tmp_path / "final"), merged=True)
    trainer = fit(module, callbacks=[callback], tmp_path=tmp_path)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    ids = module.tokenizer(["Write the letter a many times.", "3+4="], padding=True, return_tensors="pt")
    with torch.no_grad():
        adapted = module.policy.eval()(**ids).logits
        base_only = module.ref_model(**ids).logits if module.ref_model is not None else None
    assert base_only is None  # beta = 0: no reference at all
    exported = export_checkpoint(str(tmp_path / "run.ckpt"), str(tmp_path / "ckpt_export"), merged=True)
    for directory in (tmp_path / "final", tmp_path / "ckpt_export"):
        assert (directory / "adapter_config.json").exists() and (directory / "adapter_model.safetensors").exists()
        merged = AutoModelForCausalLM.from_pretrained(directory / MERGED_DIR)
        assert not any("lora" in n for n, _ in merged.named_parameters())
        with torch.no_grad():
            torch.testing.assert_close(merged(**ids).logits, adapted, rtol=0, atol=1e-5)
        # the adapter alone, on the same (seeded) base, gives the same logits
        torch.manual_seed(0)
        base = load_policy("tiny").model
        with torch.no_grad():
            reloaded = peft.PeftModel.from_pretrained(base, str(directory)).eval()
            torch.testing.assert_close(reloaded(**ids).logits, adapted, rtol=0, atol=1e-5)
    assert exported == str(tmp_path / "ckpt_export")


def test_resumed_lora_run_matches_the_uninterrupted_one(tmp_path):
    def make_module():
        return toy_module(lora=LORA, entropy_coef=0.1)

    def make_data():
        return ToyDataModule(train_size=8, val_size=0, batch_size=2)

    module_a, rec_a, t_a = run(tmp_path / "a", make_module, make_data)
    run(tmp_path / "b", make_module, make_data, kill_at=4)
    module_b, rec_b, t_b = run(tmp_path / "b", make_module, make_data, resume=True)  # starts from perturbed weights
    assert_same_after(rec_a, rec_b, start=4)
    assert_same_state(module_a, t_a, module_b, t_b)  # adapters, frozen base, AdamW moments, schedule
    state = t_b.optimizers[0].state_dict()["state"]
    assert len(state) == len(adapter_names(module_b))  # the optimizer only ever held the adapters
    assert max(float(p.abs().max()) for n, p in module_b.named_parameters() if "lora_B" in n) > 0


@pytest.mark.parametrize("lora, match", [({"r": 0}, "lora.r must be a positive"), ({"r": -2}, "lora.r must be a positive"),
                                         ({"r": 4, "target_modules": ["qproj"]}, "match no layer"),
                                         ({"r": 4, "dropout": 1.0}, "dropout"), ({"r": 4, "rank": 8}, "unknown key")])
def test_bad_lora_settings_are_one_line(lora, match):
    with pytest.raises(ValueError, match=match):
        GRPO(model="tiny", lora=lora)


def test_bad_lora_setting_through_the_cli_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  class_path: GRPO\n  init_args:\n    lora: {r: 4, target_modules: [qproj]}\n"
                      "data:\n  class_path: ToyDataModule\n")
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config", str(config)])
    assert done.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "model.lora.target_modules: ['qproj'] match no layer" in err[0] and "q_proj" in err[0]


def test_missing_peft_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(ImportError, match="pip install peft"):
        GRPO(model="tiny", lora=LORA)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error")
def test_qlora_on_cpu_is_one_line():
    with pytest.raises(ValueError, match="load_in_4bit .QLoRA. needs a CUDA GPU"):
        GRPO(model="tiny", lora={"r": 4, "load_in_4bit": True})


def test_lora_with_a_quantized_reference_copy_is_refused():
    with pytest.raises(ValueError, match="ref_quantization has no effect with model.lora"):
        GRPO(model="tiny", beta=0.1, ref_quantization="8bit", lora=LORA)


def test_settings_round_trip_through_hparams():
    module = GRPO(model="tiny", lora=LoraSettings(r=4, target_modules=["q_proj", "v_proj"]))
    assert module.hparams.lora == {"r": 4, "alpha": None, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
                                   "load_in_4bit": False, "save_base": False}
    config = module.policy.peft_config["default"]
    assert config.r == 4 and config.lora_alpha == 8 and set(config.target_modules) == {"q_proj", "v_proj"}
    assert {n.split(".")[-4] for n in adapter_names(module)} == {"q_proj", "v_proj"}


def test_fp4_plugin_wraps_the_base_layers_and_refuses_a_high_precision_reference():
    from lit_reason.precision import FP4Precision
    from lit_reason.precision.fp4_linear import FP4Linear

    torch.manual_seed(0)
    module = GRPO(**FAST, lora=LORA)
    plugin = FP4Precision(dtype="float32")
    fit(module, steps=1, plugins=[plugin])
    q_proj = module.policy.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, FP4Linear) and not isinstance(module.policy.base_model.model.lm_head, FP4Linear)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="quantize_reference: true"):
        fit(GRPO(**FAST, beta=0.1, lora=LORA), steps=1, plugins=[FP4Precision(dtype="float32")])


def test_sft_with_lora_exports_a_loadable_merged_warm_start(tmp_path):
    torch.manual_seed(0)
    module = SFT(model="tiny", lr=3e-2, lora=LORA, export_dir=str(tmp_path / "sft"))
    fit(module, steps=2)
    assert (tmp_path / "sft" / "adapter_config.json").exists()
    loaded = load_policy(str(tmp_path / "sft" / MERGED_DIR))  # what `model: <export_dir>/merged` loads
    ids = module.tokenizer(["3+4="], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**ids).logits, module.policy.eval()(**ids).logits, rtol=0, atol=1e-5)
