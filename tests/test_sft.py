"""SFT: example packing and the completion-only loss by hand, prompts identical to GRPO's, the
loss falls on a fixed batch, the export loads back with load_policy, bad input is one clear error."""

import math

import lightning as L
import pytest
import torch

from datamodules.base import ProblemDataModule, ProblemDataset
from datamodules.toy import make_toy_problem
from lit_reason.modules import GRPO, SFT
from lit_reason.modules.sft import IGNORE, completion_loss, pack_example
from lit_reason.models.policy import load_policy
from lit_reason.tasks.problem import TextProblem


def test_pack_example_cuts_the_prompt_from_the_left_first():
    assert pack_example([1, 2, 3], [7, 8], 10) == ([1, 2, 3, 7, 8], 3)
    # A prompt that fits, but is longer than half the free room, is kept whole (a negative slice
    # start used to keep only its tail).
    assert pack_example([1, 2, 3], [7], 5) == ([1, 2, 3, 7], 3)
    assert pack_example(list(range(40)), [7] * 34, 112) == (list(range(40)) + [7] * 34, 40)
    assert pack_example([1, 2, 3], [7, 8], 4) == ([2, 3, 7, 8], 2)
    assert pack_example([1, 2, 3], [7, 8], 2) == ([7, 8], 0)
    assert pack_example([1, 2, 3], [7, 8, 9], 2) == ([7, 8], 0)  # only an over-long answer loses its tail


def test_completion_loss_by_hand():
    # vocab 4; logits of position t predict label t+1
    logits = torch.zeros(1, 4, 4)
    logits[0, 1, 2] = math.log(3.0)  # p(2) = 3/6 at position 1
    labels = torch.tensor([[IGNORE, IGNORE, 2, 0]])  # scored: label 2 (from pos 1), label 0 (from pos 2, uniform)
    loss, count = completion_loss(logits, labels)
    expected = (-math.log(0.5) - math.log(0.25)) / 2
    assert count.item() == 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    empty, zero = completion_loss(logits, torch.full((1, 4), IGNORE))
    assert zero.item() == 0 and empty.item() == 0.0


def _problems(n=4):
    return [make_toy_problem("add", 0, i) for i in range(n)]


def test_examples_use_grpo_prompt_tokens_and_label_only_the_answer():
    torch.manual_seed(0)
    sft = SFT(model="tiny", prompt_format="plain")
    grpo = GRPO(model="tiny", prompt_format="plain")
    problems = _problems(3)
    ids, mask, labels = sft.encode_examples(problems)
    prompt_ids, prompt_mask = grpo.encode_prompts([p.prompt for p in problems])
    tok = sft.tokenizer
    for row, problem in enumerate(problems):
        answer = tok(problem.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        real = ids[row][mask[row].bool()].tolist()
        rl_prompt = prompt_ids[row][prompt_mask[row].bool()].tolist()
        assert real == rl_prompt + answer  # the warm-up sees exactly the RL prompt, then the answer
        scored = labels[row][labels[row] != IGNORE].tolist()
        assert scored == answer
        assert labels[row, -len(answer):].tolist() == answer


def test_hparams_hold_sfts_values_and_grpos_settings():
    sft = SFT(model="tiny", lr=0.5, max_length=99, val_max_new_tokens=7, export_dir="somewhere")
    assert sft.hparams.lr == 0.5 and sft.hparams.max_length == 99 and sft.hparams.export_dir == "somewhere"
    assert sft.hparams.max_new_tokens == 7 and sft.val_sampling.max_new_tokens == 7
    assert sft.hparams.num_generations == GRPO().hparams.num_generations  # GRPO's code can read its settings


def test_builds_under_lightning_cli(tmp_path):
    """LightningCLI passes only SFT's arguments to save_hyperparameters; GRPO's code must still work."""
    from lit_reason.app.cli import LitReasonCLI

    cli = LitReasonCLI(args=["--model", "SFT", "--model.lr", "0.25", "--model.prompt_format", "plain",
                             "--data", "ToyDataModule", "--data.task", "add", "--trainer.logger", "false",
                             "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert isinstance(cli.model, SFT) and cli.model.hparams.lr == 0.25
    assert cli.model.hparams.temperature == GRPO().hparams.temperature


class FixedData(ProblemDataModule):
    def __init__(self, problems, steps, batch_size=4, val=None):
        super().__init__(batch_size=batch_size)
        self.problems, self.steps, self.val = problems, steps, val

    def train_dataset(self):
        return ProblemDataset.from_items(self.problems * self.steps)

    def val_dataset(self):
        return None if self.val is None else ProblemDataset.from_items(self.val)


def test_loss_falls_on_a_fixed_batch_and_export_loads_back(tmp_path):
    L.seed_everything(0)
    problems = _problems(4)
    export = tmp_path / "policy"
    sft = SFT(model="tiny", prompt_format="plain", lr=1e-2, export_dir=str(export), val_max_new_tokens=6)
    with torch.no_grad():
        before = sft.supervised_loss(problems)[0].item()
    trainer = L.Trainer(max_steps=25, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(sft, FixedData(problems, steps=25))
    sft.eval()
    with torch.no_grad():
        after = sft.supervised_loss(problems)[0].item()
    assert after < 0.5 * before, (before, after)

    loaded = load_policy(str(export))
    text = "Board:\nX . O\n\tIt is X's turn. <answer>(1,2)</answer>"  # spaces, newlines, tabs, tags
    assert loaded.tokenizer(text)["input_ids"] == sft.tokenizer(text)["input_ids"]
    assert loaded.tokenizer.decode(loaded.tokenizer(text)["input_ids"]) == text
    ids = torch.tensor([sft.tokenizer("3+4=")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(input_ids=ids).logits, sft.policy(input_ids=ids).logits, atol=1e-5)
    grpo = GRPO(model=str(export), prompt_format="plain")  # RL starts from the export
    assert torch.equal(grpo.policy.get_input_embeddings().weight, sft.policy.get_input_embeddings().weight)


def test_validation_is_grpos_greedy_accuracy():
    L.seed_everything(0)
    val = _problems(6)
    sft = SFT(model="tiny", prompt_format="plain", val_max_new_tokens=4)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(sft, FixedData(val, steps=1, batch_size=3, val=val), verbose=False)[0]
    rollout = sft.generate(val, engine=sft.val_engine, repeats=1)
    expected = sum(p.score(t) >= 1.0 for p, t in zip(val, rollout.texts)) / len(val)
    assert metrics["val/accuracy"] == pytest.approx(expected)
    assert rollout.completion_ids.shape[1] <= 4


def test_problem_without_answer_is_one_clear_error():
    sft = SFT(model="tiny", prompt_format="plain")
    no_answer = TextProblem("2+2=", "", lambda c: 0.0)
    with pytest.raises(ValueError, match="gold completion"):
        sft.encode_examples([no_answer])
    with pytest.raises(ValueError, match="max_length"):
        SFT(model="tiny", max_length=1)
