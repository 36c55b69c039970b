"""LLDMonitor: its figures against log-likelihoods computed by hand (one unpadded forward per
probe), and its hook bracketing inside a real fit."""

import lightning as L
import pytest
import torch

from callbacks.lld_monitor import LLDMonitor
from datamodules import ToyDataModule
from lit_reason.modules import GRPO

PROBES = [("3+4=", "<answer>7</answer>"), ("Write the letter b many times.", "bbbb"), ("x", "a much longer reply")]


def tiny_module(**kw):
    torch.manual_seed(0)
    args = dict(model="tiny", num_generations=2, max_new_tokens=4, prompt_format="plain", lr=1e-2)
    args.update(kw)
    return GRPO(**args)


def hand_loglik(module, prompt, completion):
    """ln pi(completion + EOS | prompt): no padding, no batching, explicit positions."""
    tok = module.tokenizer
    p = tok(prompt)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = module.policy(input_ids=torch.tensor([p + c])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[len(p) + i - 1, t]) for i, t in enumerate(c))


def test_measured_delta_matches_a_hand_computed_loglik_change():
    module = tiny_module()
    monitor = LLDMonitor(probes=PROBES, epsilon=0.0, batch_size=2)  # 2 forward chunks, padding inside
    before = monitor.measure(module)
    hand_before = torch.tensor([hand_loglik(module, p, c) for p, c in PROBES], dtype=torch.float64)
    torch.testing.assert_close(before.double(), hand_before, rtol=1e-5, atol=1e-4)

    with torch.no_grad():  # an "update": shift the final norm and one attention projection
        module.policy.model.norm.weight.mul_(1.3)
        module.policy.model.layers[0].self_attn.q_proj.weight.add_(0.05)
    after = monitor.measure(module)
    hand_delta = torch.tensor([hand_loglik(module, p, c) for p, c in PROBES], dtype=torch.float64) - hand_before
    figures = monitor.summarize(before, after)
    assert figures["lld/mean_delta"] == pytest.approx(float(hand_delta.mean()), abs=1e-3)
    assert figures["lld/share_displaced"] == pytest.approx(float((hand_delta < 0).double().mean()))
    assert float(hand_delta.abs().min()) > 1e-2  # the change is real, so the comparison means something


def test_share_displaced_counts_deltas_below_epsilon():
    monitor = LLDMonitor(probes=PROBES, epsilon=0.5)
    figures = monitor.summarize(torch.tensor([0.0, 0.0, 0.0, 0.0]), torch.tensor([-1.0, 0.49, 0.5, 2.0]))
    assert figures == {"lld/mean_delta": pytest.approx(0.4975), "lld/share_displaced": 0.5}


def test_hooks_bracket_each_training_step_in_a_fit():
    """lr 0: nothing moves, every delta is exactly 0; lr 1e-2: the policy moves and so do the deltas
    (char_fill gives partial credit, so a random policy already has non-zero advantages)."""
    frozen, moving = LLDMonitor(num_probes=3, epsilon=1e-9), LLDMonitor(num_probes=3, every_n_steps=2)
    for monitor, lr in ((frozen, 0.0), (moving, 1e-2)):
        L.seed_everything(0)
        trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
        trainer.fit(tiny_module(lr=lr), ToyDataModule(task="char_fill", batch_size=2, val_size=0))
    # probes were taken from the first training items, which have gold answers
    assert [c for _, c in frozen.probes] == [ToyDataModule(task="char_fill").train_dataset()[i].answer for i in range(3)]
    assert len(frozen.history) == 3 and all(h["deltas"] == [0.0, 0.0, 0.0] for h in frozen.history)
    assert all(h["lld/share_displaced"] == 1.0 for h in frozen.history)  # 0 < epsilon
    assert [h["step"] for h in moving.history] == [0, 2]
    # a step whose groups all tie has zero advantages (no update), so only require movement somewhere
    assert any(abs(d) > 0 for h in moving.history for d in h["deltas"])
    assert trainer.callback_metrics["lld/mean_delta"] == pytest.approx(moving.history[-1]["lld/mean_delta"])


def test_bad_probes_fail_with_one_clear_line():
    with pytest.raises(ValueError, match="prompt, correct completion"):
        LLDMonitor(probes=[("only a prompt",)])
