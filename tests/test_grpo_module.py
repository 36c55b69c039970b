"""The GRPO LightningModule: it learns, it reuses rollouts, and bad input fails clearly."""

import warnings

import lightning as L
import pytest
import torch

from datamodules import ToyDataModule
from lit_reason.modules import GRPO


class Recorder(L.Callback):
    def __init__(self):
        self.rewards, self.metrics = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rewards.append(float(outputs["rewards"].nanmean()))
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def fit(module, data, steps, callbacks=()):
    rec = Recorder()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec, *callbacks])
    trainer.fit(module, data)
    return rec, trainer


def tiny(**kw):
    args = dict(model="tiny", num_generations=4, max_new_tokens=8, lr=1e-2, prompt_format="plain")
    args.update(kw)
    return GRPO(**args)


def test_grpo_raises_reward_on_a_tiny_task():
    """Fixed seed and step count: reward = share of the asked letter; a random model starts near 1/100."""
    L.seed_everything(0)
    module = tiny(num_generations=8, max_new_tokens=12)
    rec, _ = fit(module, ToyDataModule(task="char_fill", letters="a", batch_size=4, val_size=0), steps=30)
    start, end = sum(rec.rewards[:5]) / 5, sum(rec.rewards[-5:]) / 5
    assert start < 0.1
    assert end > 0.4, f"reward {start:.3f} -> {end:.3f}"


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_every_loss_type_trains_and_logs(loss_type):
    L.seed_everything(0)
    rec, _ = fit(tiny(loss_type=loss_type), ToyDataModule(batch_size=2, val_size=0), steps=2)
    m = rec.metrics[-1]
    for key in ("reward", "accuracy", "reward_std", "frac_reward_zero_std", "entropy", "clip_ratio/region_mean",
                "completions/mean_length", "completions/clipped_ratio", "num_tokens", "rollout/tokens_per_s", "loss"):
        assert key in m, key
    assert m["entropy"] > 0


def test_rollout_reuse_with_minibatches_clips_and_steps_the_optimizer_mu_times():
    L.seed_everything(0)
    module = tiny(num_iterations=3, minibatch_size=4, lr=5e-2)
    rec, trainer = fit(module, ToyDataModule(batch_size=2, val_size=0), steps=6)
    # 2 prompts x 4 = 8 completions -> 2 minibatches x 3 passes = 6 optimizer steps from ONE rollout
    assert len(rec.rewards) == 1 and trainer.global_step == 6
    assert rec.metrics[-1]["clip_ratio/region_mean"] > 0  # later passes move the ratio off 1


def test_kl_reference_only_when_beta_nonzero_and_zero_at_start():
    assert tiny(beta=0.0).ref_model is None
    L.seed_everything(0)
    module = tiny(beta=0.1, lr=0.0)  # lr 0: the policy stays equal to the reference
    rec, _ = fit(module, ToyDataModule(batch_size=2, val_size=0), steps=1)
    assert module.ref_model is not None
    assert rec.metrics[-1]["kl"] == pytest.approx(0.0, abs=1e-6)


def test_micro_batching_gives_the_same_gradient():
    """Splitting the forward into micro-batches only trades memory for time."""
    grads = []
    for micro in (None, 2):
        L.seed_everything(0)
        module = tiny(micro_batch_size=micro, lr=0.0, max_grad_norm=0.0, loss_type="bnpo")
        captured = {}

        class Grab(L.Callback):
            def on_before_optimizer_step(self, trainer, pl_module, optimizer):
                captured["g"] = torch.cat([p.grad.flatten() for p in pl_module.policy.parameters() if p.grad is not None])

        fit(module, ToyDataModule(batch_size=2, val_size=0), steps=1, callbacks=[Grab()])
        grads.append(captured["g"])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_validation_logs_greedy_accuracy_and_pass_at_k():
    L.seed_everything(0)
    module = tiny(val_num_samples=2, val_temperature=1.0)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    out = trainer.validate(module, ToyDataModule(task="add", val_size=4, batch_size=2), verbose=False)[0]
    assert 0.0 <= out["val/accuracy"] <= out["val/pass@2"] <= 1.0


# ---------------------------------------------------------------- bad input
def test_group_size_below_two_is_rejected():
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        tiny(num_generations=1)


def test_minibatch_not_dividing_the_rollout_is_rejected_before_training():
    with pytest.raises(ValueError, match="minibatch_size=3 must divide"):
        fit(tiny(minibatch_size=3), ToyDataModule(batch_size=2, val_size=0), steps=1)


def test_long_prompt_error_and_truncate():
    module = tiny(max_prompt_length=4, long_prompt="error", prompt_format="plain")
    with pytest.raises(ValueError, match=r"limit of 4 \(model.max_prompt_length\)"):
        module.encode_prompts(["a prompt that is far too long"])
    module = tiny(max_prompt_length=4, prompt_format="plain")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, mask = module.encode_prompts(["a prompt that is far too long"])
    assert module.tokenizer.decode(ids[0]) == "long"  # the end of the text is kept
    assert any("lose the start of their user text" in str(w.message) for w in caught)


def test_long_chat_prompt_keeps_the_template_and_cuts_the_user_text():
    module = tiny(max_prompt_length=60, prompt_format="chat")
    ids = module.encode_prompts(["x" * 200 + " the question?"])[0][0]
    text = module.tokenizer.decode(ids)
    head, tail = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"
    assert text.startswith(head) and text.endswith(tail)
    kept = text[len(head):-len(tail)]
    assert kept.endswith("the question?") and len(ids) == 60 and set(kept[:-len(" the question?")]) == {"x"}
    with pytest.raises(ValueError, match="template alone"):
        tiny(max_prompt_length=10, prompt_format="chat").encode_prompts(["x" * 200])


def raising_reward(problem, completion, score):
    raise RuntimeError("boom")


def test_a_raising_reward_is_logged_as_zero_and_training_goes_on():
    L.seed_everything(0)
    module = tiny(rewards={"correct": 1.0, "tests.test_grpo_module:raising_reward": 1.0}, on_reward_error="zero")
    with pytest.warns(UserWarning, match="boom"):
        rec, trainer = fit(module, ToyDataModule(batch_size=2, val_size=0), steps=2)
    assert trainer.global_step == 2
    assert rec.metrics[-1]["rewards/tests.test_grpo_module:raising_reward/errors"] == 1.0
    assert rec.metrics[-1]["rewards/tests.test_grpo_module:raising_reward/mean"] == 0.0
    assert rec.metrics[-1]["rewards/tests.test_grpo_module:raising_reward/failed_rows"] == 2 * 4  # every row of the step
    assert rec.metrics[-1]["rewards/correct/failed_rows"] == 0.0


def test_a_raising_reward_stops_the_run_before_the_update_by_default():
    L.seed_everything(0)
    module = tiny(rewards={"correct": 1.0, "tests.test_grpo_module:raising_reward": 1.0})
    before = [p.detach().clone() for p in module.policy.parameters()]
    with pytest.raises(ValueError, match=r"reward 'tests.test_grpo_module:raising_reward' raised RuntimeError: boom on row 0 \(prompt: "):
        fit(module, ToyDataModule(batch_size=2, val_size=0), steps=2)
    assert all(torch.equal(a, b) for a, b in zip(before, module.policy.parameters()))  # no optimizer step ran


def test_unknown_reward_and_options_name_the_fix():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        tiny(rewards={"nope": 1.0})
    with pytest.raises(ValueError, match="loss_type"):
        tiny(loss_type="ppo")
