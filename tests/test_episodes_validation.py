"""Validation on episodes: with ``model.episodes`` set, validation plays the same episodes as
training (on the validation engine) and logs the final-turn and first-turn accuracy."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from datamodules import ToyDataModule
from lit_reason.modules import GRPO
from lit_reason.tasks.problem import TextProblem
from tests.test_episodes import ScriptedEngine


def answers(answer: str) -> TextProblem:
    return TextProblem([{"role": "user", "content": "Which number?"}], answer, lambda c: 1.0 if answer in c else 0.0)


class Answers(L.Callback):
    """The texts validation scored, batch by batch."""

    def __init__(self):
        self.texts = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.texts += outputs["rollout"].texts


def validate(module, problems, batch_size, callbacks=()):
    data = ToyDataModule(val_size=len(problems), batch_size=batch_size)
    data.val_dataloader = lambda: torch.utils.data.DataLoader(problems, batch_size=batch_size, collate_fn=list)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=list(callbacks))
    return trainer.validate(module, data, verbose=False)[0]


def test_validation_plays_retry_episodes_and_logs_final_and_first_turn_accuracy():
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=8,
                  episodes={"environment": "retry", "environment_args": {"attempts": 3}, "max_turns": 3})
    tok = module.tokenizer
    turns = ["<answer>4</answer>", "<answer>7</answer>", "no"]
    module.val_engine = ScriptedEngine(tok, turns)  # every live episode gets the same scripted turn
    out = validate(module, [answers("4"), answers("7"), answers("9")], batch_size=3)
    # "4": right at once (1 turn); "7": wrong, then right (2 turns); "9": wrong 3 times
    assert out["val/first_turn_accuracy"] == pytest.approx(1 / 3)
    assert out["val/accuracy"] == pytest.approx(2 / 3)
    assert out["val/reward"] == pytest.approx(2 / 3) and out["val/first_turn_reward"] == pytest.approx(1 / 3)
    assert out["val/turns_mean"] == pytest.approx(2.0)
    sampled = [len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in turns]  # + the end-of-turn token
    assert out["val/mean_length"] == pytest.approx((sampled[0] + sum(sampled[:2]) + sum(sampled)) / 3)
    assert module.val_engine.calls == 3


def test_one_turn_episodes_validate_exactly_like_plain_greedy_validation():
    """With ``single_turn`` episodes validation reads the same greedy answers as without episodes
    (the validation engine, not the training sampler at temperature 1): the same texts, accuracy,
    reward and lengths."""
    problems = [ToyDataModule(task="add").val_dataset()[i] for i in range(6)]
    results, texts = [], []
    for episodes in (None, {"environment": "single_turn", "max_turns": 1}):
        L.seed_everything(0)
        module = GRPO(model="tiny", num_generations=2, max_new_tokens=6, temperature=1.0, sampling_seed=0,
                      prompt_format="plain", episodes=episodes)
        texts.append(Answers())
        results.append(validate(module, problems, batch_size=3, callbacks=[texts[-1]]))
    plain, one_turn = results
    assert len(texts[0].texts) == 6 and texts[0].texts == texts[1].texts
    for key in ("val/accuracy", "val/reward", "val/mean_length"):
        assert one_turn[key] == pytest.approx(plain[key]), key
    assert one_turn["val/first_turn_accuracy"] == pytest.approx(plain["val/accuracy"])
    assert one_turn["val/turns_mean"] == 1.0
