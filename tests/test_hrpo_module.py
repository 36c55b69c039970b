"""lit_reason.modules.HRPO: config rules, rewards, optimizer groups, reference on plain ids, a short
seeded training run (Lambda moves, rewards finite, gate logged), checkpointing, the CLI config."""

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.gate_monitor import GateMonitor, gate_metrics
from datamodules import ToyDataModule
from lit_reason.algorithms import objectives as obj
from lit_reason.app.cli import LitReasonCLI, main as cli_main
from lit_reason.modules import HRPO
from lit_reason.modules.grpo import GRPO
from lit_reason.tasks.problem import TextProblem
from lit_reason.rollout import Rollout

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "hrpo"


def tiny(**kwargs):
    torch.manual_seed(0)
    args = dict(model="tiny", num_generations=2, max_new_tokens=12, prompt_format="plain", delimiter="####")
    args.update(kwargs)
    return HRPO(**args)


@pytest.mark.parametrize("bad, match", [({"num_iterations": 2}, "on-policy"), ({"minibatch_size": 2}, "on-policy"),
                                        ({"tau": 0.0}, "tau"), ({"max_delimiters": 0}, "max_delimiters"),
                                        ({"delimiter": None}, "unquoted")])
def test_config_errors_are_one_clear_line(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny(**bad)


def test_more_than_one_delimiter_gets_reward_zero():
    module = tiny()
    texts = ["x #### 4", "#### 4 #### 4", "no delimiter", "a ## b ## c", "########"]
    problems = [TextProblem("p", "a", lambda c: 1.0) for _ in texts]
    n = len(texts)
    rollout = Rollout(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long),
                      torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long), torch.zeros(n, 1),
                      torch.zeros(n, dtype=torch.bool), texts)
    rewards, metrics = module.compute_rewards(problems, rollout, [1.0] * n, {})
    # "########" holds two non-overlapping delimiters; "a ## b ## c" holds none
    assert rewards.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert metrics["hrpo/multi_delimiter_frac"] == pytest.approx(2 / 5)


def test_three_optimizer_groups_with_their_own_lr_and_decay():
    module = tiny(lr=5e-6, gate_lr=1e-4, lambda_lr=1e-3, weight_decay=0.1, lambda_weight_decay=0.0)
    optimizer = module.configure_optimizers()["optimizer"]
    groups = optimizer.param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(5e-6, 0.1), (1e-4, 0.1), (1e-3, 0.0)]
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[1] == {id(p) for p in [*module.gate.W_r.parameters(), *module.gate.W_i.parameters()]}
    assert ids[2] == {id(module.gate.Lambda)}
    assert ids[0] == {id(p) for p in module.policy.parameters()}
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(len(i) for i in ids) == len([p for p in module.parameters() if p.requires_grad])


def test_the_paper_recipe_is_the_default_decay_0_1_everywhere_and_temperature_0_5():
    module = tiny(lr=5e-6)
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.1, 0.1]
    assert module.hparams.temperature == 0.5 and module.sampling.temperature == 0.5


def test_reference_scores_plain_token_ids():
    module = tiny(beta=0.005, r_min=0.5, r_max=0.6, delimiter="", max_new_tokens=10)
    module.policy.eval()
    rollout = module.generate([TextProblem("ab", "a", lambda c: 0.0), TextProblem("cd", "a", lambda c: 0.0)],
                              generator=torch.Generator().manual_seed(0))
    mix = rollout.extras["hybrid_mask"]  # delimiter "": every fed input of the completion is mixed
    assert torch.equal(mix[:, :-1], rollout.completion_mask[:, :-1].bool()) and not mix[:, -1].any()
    old = module.old_policy_pass(rollout, need_old=False, need_ref=True)
    plain_ref = obj.token_logps(GRPO.policy_logits(module, module.ref_model, rollout)[0], rollout.completion_ids)
    assert torch.equal(old["ref_logps"], plain_ref)
    # the reference is a copy of the initial policy: it differs from the policy only through the latents
    m = rollout.completion_mask.bool()
    assert (old["ref_logps"] - rollout.logprobs)[m].abs().max() > 1e-2
    policy_plain = obj.token_logps(GRPO.policy_logits(module, module.policy, rollout)[0], rollout.completion_ids)
    assert torch.allclose(policy_plain[m], plain_ref[m], atol=1e-5)


def test_gate_metrics_by_hand():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    mix = torch.tensor([[True, True, False, False], [True, False, False, True]])  # [1, 3] is padding
    gate = torch.tensor([[0.9, 0.7, 1.0, 1.0], [0.8, 1.0, 1.0, 0.1]])
    share = torch.tensor([[0.4, 0.6, 0.0, 0.0], [0.5, 0.0, 0.0, 0.9]])
    m = gate_metrics(mask, mix, gate, share)
    assert m["gate/a_mean"] == pytest.approx((0.9 + 0.7 + 0.8) / 3)
    assert m["gate/latent_share"] == pytest.approx((0.4 + 0.6 + 0.5) / 3)
    assert m["gate/reasoning_frac"] == pytest.approx(3 / 5)
    assert m["gate/completion_length"] == pytest.approx(2.5)
    empty = gate_metrics(mask, torch.zeros_like(mix), gate, share)
    assert (empty["gate/a_mean"], empty["gate/latent_share"], empty["gate/reasoning_frac"]) == (1.0, 0.0, 0.0)


class RewardLog(L.Callback):
    def __init__(self):
        self.rewards, self.metrics = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rewards.append(outputs["rewards"].clone())
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("gate/")})


def test_short_seeded_run_moves_lambda_keeps_rewards_finite_and_checkpoints(tmp_path):
    L.seed_everything(0)
    module = HRPO(model="tiny", num_generations=4, max_new_tokens=12, prompt_format="plain", delimiter="<answer>",
                  lr=3e-3, gate_lr=1e-2, lambda_lr=5e-2, beta=0.005, sampling_seed=0)
    lambda0 = module.gate.Lambda.detach().clone()
    w_i0 = module.gate.W_i.weight.detach().clone()
    weights0 = module.policy.get_input_embeddings().weight.detach().clone()
    log = RewardLog()
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[GateMonitor(), log])
    trainer.fit(module, ToyDataModule(task="char_fill", batch_size=2, val_size=0))
    assert len(log.rewards) == 3 and all(torch.isfinite(r).all() for r in log.rewards)
    assert (module.gate.Lambda.detach() - lambda0).abs().max() > 1e-3
    assert (module.gate.W_i.weight.detach() - w_i0).abs().max() > 1e-4
    assert (module.policy.get_input_embeddings().weight.detach() - weights0).abs().max() > 1e-4
    last = log.metrics[-1]
    assert 0.99 < last["gate/a_mean"] < 1.0 and 0.0 < last["gate/latent_share"] < 0.15
    assert 0.5 < last["gate/reasoning_frac"] <= 1.0 and last["gate/completion_length"] > 0
    assert 0.0 < last["gate/a0_mean"] < 1.0

    path = tmp_path / "hrpo.ckpt"
    trainer.save_checkpoint(path)
    restored = HRPO.load_from_checkpoint(path)
    for name, value in module.gate.state_dict().items():
        assert torch.equal(restored.gate.state_dict()[name], value), name
    assert restored.engine.gate is restored.gate and restored.val_engine.gate is restored.gate


def test_lora_without_peft_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(ImportError, match="pip install peft"):
        tiny(lora={"r": 8})


def test_tiny_config_builds_and_trains_through_the_cli(tmp_path):
    cli = LitReasonCLI(args=["--config", str(CONFIGS / "tiny_char_fill.yaml"), "--trainer.max_steps", "1",
                             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                             f"--trainer.default_root_dir={tmp_path}"], run=False)  # the report and checkpoints go there
    module = cli.model
    assert isinstance(module, HRPO) and module.hparams.delimiter == "<answer>" and module.ref_model is not None
    assert any(isinstance(c, GateMonitor) for c in cli.trainer.callbacks)
    lambda0 = module.gate.Lambda.detach().clone()
    cli.trainer.fit(module, cli.datamodule)
    assert cli.trainer.global_step == 1
    assert (module.gate.Lambda.detach() - lambda0).abs().max() > 0
    assert [g["lr"] for g in module.optimizers().param_groups] == [3e-3, 1e-2, 5e-2]


def test_paper_recipe_config_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(CONFIGS / "qwen2.5-1.5b-gsm8k.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    for line in ("model: Qwen/Qwen2.5-1.5B-Instruct", "lora:\n      r: 32\n      alpha: 64.0", "lr: 5.0e-06", "gate_lr: 0.0001",
                 "lambda_lr: 0.001", "num_generations: 4", "beta: 0.005", "max_grad_norm: 0.1", "tau: 0.5",
                 "optimizer: adamw8bit", "source: gsm8k", "delimiter: '####'"):
        assert line in printed, line


def test_lora_adapters_train_with_the_gate_when_peft_is_installed():
    pytest.importorskip("peft")
    module = tiny(lora={"r": 4, "alpha": 8}, delimiter="", r_min=0.5, r_max=0.6, max_new_tokens=8)
    groups = module.optimizer_param_groups()
    assert len(groups) == 3 and all("lora_" in n for n, p in module.policy.named_parameters() if p.requires_grad)
    assert module.engine.model is module.policy and module.val_engine.model is module.policy
    module.policy.eval()
    rollout = module.generate([TextProblem("ab", "a", lambda c: 0.0)], generator=torch.Generator().manual_seed(0))
    logps = obj.token_logps(module.policy_logits(module.policy, rollout)[0], rollout.completion_ids)
    assert (logps - rollout.logprobs)[rollout.completion_mask.bool()].abs().max() < 1e-4


def _train(module, steps):
    rewards = RewardLog()
    L.seed_everything(0)  # same data order for both runs
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rewards])
    trainer.fit(module, ToyDataModule(task="char_fill", batch_size=2, val_size=0))
    return torch.stack(rewards.rewards)


def test_with_the_gate_shut_hrpo_trains_exactly_like_grpo():
    common = dict(model="tiny", num_generations=4, max_new_tokens=12, prompt_format="plain", lr=3e-3, beta=0.005, sampling_seed=0,
                  temperature=0.5, weight_decay=0.1)  # HRPO's defaults, given to both
    L.seed_everything(0)
    grpo = GRPO(**common)
    L.seed_everything(0)
    hrpo = HRPO(**common, delimiter="", gate_lr=0.0, lambda_lr=0.0)
    with torch.no_grad():
        hrpo.gate.Lambda.fill_(-100.0)  # softplus ~ 4e-44: a == 1 in float32, every input is its token embedding
    initial = {k: v.clone() for k, v in grpo.policy.state_dict().items()}
    grpo_rewards, hrpo_rewards = _train(grpo, 2), _train(hrpo, 2)
    assert torch.equal(grpo_rewards, hrpo_rewards)
    for name, value in grpo.policy.state_dict().items():
        assert torch.allclose(value, hrpo.policy.state_dict()[name], atol=1e-5), name
    assert max(float((v - initial[k]).abs().max()) for k, v in grpo.policy.state_dict().items()) > 1e-3  # it trained
