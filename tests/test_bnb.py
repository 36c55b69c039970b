"""bitsandbytes where it pays: 8-bit optimizers chosen in YAML, a quantized frozen reference."""

from __future__ import annotations

import lightning as L
import pytest
import torch

pytest.importorskip("bitsandbytes")
import bitsandbytes as bnb  # noqa: E402

from datamodules.toy import ToyDataModule  # noqa: E402
from lit_reason.algorithms import objectives as obj  # noqa: E402
from lit_reason.app.cli import main  # noqa: E402
from lit_reason.modules import GRPO  # noqa: E402
from lit_reason.models.policy import load_policy  # noqa: E402
from lit_reason.models.reference import build_reference, weight_bytes  # noqa: E402

FAST = ["--trainer.max_steps=2", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--data=ToyDataModule",
        "--data.batch_size=2", "--data.val_size=0", "--model=GRPO", "--model.num_generations=2",
        "--model.max_new_tokens=4"]


def fit(module: GRPO, steps: int = 2) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=ToyDataModule(batch_size=2, val_size=0))
    return trainer


class OptimizerSpy(L.Callback):
    """Keeps the trainer's optimizer at the end of training (named in the YAML below)."""

    seen: dict = {}

    def on_train_end(self, trainer, pl_module):
        OptimizerSpy.seen["opt"] = trainer.optimizers[0]


@pytest.mark.parametrize("name, cls", [("adamw8bit", bnb.optim.AdamW8bit), ("paged_adamw8bit", bnb.optim.PagedAdamW8bit)])
def test_8bit_optimizer_is_selected_from_the_config_and_keeps_uint8_state(tmp_path, name, cls, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "opt.yaml"
    config.write_text(f"model:\n  class_path: GRPO\n  init_args:\n    optimizer: {name}\n    lr: 1.0e-3\n"
                      "trainer:\n  callbacks:\n    - class_path: tests.test_bnb.OptimizerSpy\n")
    main(["fit", "--config", str(config), *FAST, f"--trainer.default_root_dir={tmp_path}"])
    opt = OptimizerSpy.seen.pop("opt")
    assert isinstance(opt, cls)
    embedding = opt.param_groups[0]["params"][0]
    assert embedding.numel() >= 4096  # bitsandbytes keeps tensors below 4096 elements in 32-bit
    state = opt.state[embedding]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8
    assert int(state["step"]) == 2


@pytest.mark.parametrize("mode, layer, max_ratio, max_kl", [("8bit", bnb.nn.Linear8bitLt, 0.30, 1e-3),
                                                           ("nf4", bnb.nn.Linear4bit, 0.16, 2e-2)])
def test_quantized_reference_is_smaller_frozen_and_close(mode, layer, max_ratio, max_kl):
    torch.manual_seed(0)
    policy = load_policy("small").model
    ref = build_reference(policy, mode)
    linears = [m for name, m in ref.named_modules() if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))]
    assert linears and all(isinstance(m, layer) for m in linears)
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    # the "small" preset is 90% Linear weights (tied 113-row embedding): int8 ~ 1/4 and nf4 ~ 1/8 of fp32
    assert weight_bytes(ref) < max_ratio * weight_bytes(policy)
    ids = torch.randint(4, 100, (2, 24))
    with torch.no_grad():
        lp = torch.log_softmax(policy(ids).logits, -1)
        lq = torch.log_softmax(ref(ids).logits, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1).mean()
    assert 0 < kl < max_kl  # quantized, so not identical, but close
    # the policy was copied, not touched
    assert all(type(m) is not layer for m in policy.modules())


def test_grpo_trains_with_a_quantized_reference_and_its_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=6, beta=0.1, lr=1e-2, ref_quantization="8bit")
    assert isinstance(module.ref_model.model.layers[0].mlp.up_proj, bnb.nn.Linear8bitLt)
    before = {k: v.clone() for k, v in module.ref_model.state_dict().items()}
    trainer = fit(module, steps=3)
    assert trainer.global_step == 3
    assert float(trainer.callback_metrics["kl"]) > 0  # the policy moved away from the int8 reference
    for k, v in module.ref_model.state_dict().items():
        assert torch.equal(v, before[k]), f"reference weight {k} changed"

    path = tmp_path / "q.ckpt"
    trainer.save_checkpoint(path)
    torch.manual_seed(1)
    fresh = GRPO(model="tiny", num_generations=2, max_new_tokens=6, beta=0.1, ref_quantization="8bit")
    fresh.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    ids = torch.randint(4, 100, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(fresh.ref_model(ids).logits, module.ref_model(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(fresh.policy(ids).logits, module.policy(ids).logits, rtol=0, atol=0)


def test_nf4_reference_log_probs_feed_the_kl():
    torch.manual_seed(0)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=6, beta=0.1, ref_quantization="nf4")
    ids = torch.randint(4, 100, (2, 12))
    with torch.no_grad():
        ref = obj.token_logps(module.ref_model(ids).logits[:, :-1], ids[:, 1:])
        pol = obj.token_logps(module.policy(ids).logits[:, :-1], ids[:, 1:])
    kl = obj.kl_k3(pol, ref)
    assert torch.isfinite(kl).all() and (kl >= 0).all() and 0 < kl.mean() < 0.05


def test_bad_ref_quantization_fails_with_one_clear_line():
    with pytest.raises(ValueError, match="ref_quantization='int4'.*8bit.*nf4"):
        GRPO(model="tiny", beta=0.1, ref_quantization="int4")
