"""The NTHR module: what its old-policy pass keeps, how it wires the weights, and that with
eta = 1 it is exactly GRPO."""

import lightning as L
import pytest
import torch

from datamodules.base import ProblemDataModule, ProblemDataset
from lit_reason.algorithms import nthr
from lit_reason.app.cli import main as cli_main
from lit_reason.modules import GRPO, NTHR
from lit_reason.algorithms.objectives import token_logps
from lit_reason.tasks.problem import TextProblem


class EvenLengthData(ProblemDataModule):
    """Correct = an even number of characters: a random policy gets mixed groups."""

    def train_dataset(self):
        return ProblemDataset(lambda i: TextProblem(f"q{i}:", "ab", lambda c: float(len(c) % 2 == 0)), 64)


def tiny(cls=NTHR, **kw):
    torch.manual_seed(0)
    args = dict(model="tiny", num_generations=4, max_new_tokens=6, prompt_format="plain", lr=1e-2, sampling_seed=0)
    args.update(kw)
    return cls(**args)


def rollout_for(module, n_prompts=3):
    problems = EvenLengthData().train_dataset()
    return module.generate([problems[i] for i in range(n_prompts)], generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("chunked", [True, False])
def test_old_pass_keeps_hidden_states_and_group_restricted_probabilities(chunked):
    module = tiny(micro_batch_size=3, chunked_lm_head=chunked, temperature=0.8)  # micro-batches cut across groups of 4
    rollout = rollout_for(module)
    old = module.old_policy_pass(rollout, need_old=True, need_ref=False)
    logits, hidden = module.policy_logits(module.policy, rollout, need_hidden=True)
    probs = torch.softmax(logits.float(), -1)
    counted = rollout.completion_mask.float()  # what the losses read (the chunked head leaves 0 elsewhere)
    torch.testing.assert_close(old["nthr_hidden"], hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(old["old_logps"] * counted, token_logps(logits, rollout.completion_ids) * counted,
                               rtol=1e-5, atol=1e-5)
    for g in range(3):
        rows = slice(4 * g, 4 * g + 4)
        n = int(old["nthr_vocab_sizes"][g])
        vocab = old["nthr_vocab"][g, :n]
        ids, mask = rollout.completion_ids[rows], rollout.completion_mask[rows]
        assert vocab.tolist() == sorted(set(ids[mask.bool()].tolist()))
        torch.testing.assert_close(old["nthr_probs"][rows, :, :n] * mask[..., None],
                                   probs[rows][..., vocab] * mask[..., None], rtol=1e-5, atol=1e-6)
    assert old["nthr_probs"].shape[-1] < probs.shape[-1]  # never the full vocabulary


def test_token_weights_apply_group_weights_to_mixed_groups_only():
    module = tiny(eta=0.0, beta_nthr=1.0)
    rollout = rollout_for(module)
    old = module.old_policy_pass(rollout, need_old=False, need_ref=False)
    old["nthr_correct"] = torch.tensor([1, 0, 1, 0] + [1] * 4 + [0] * 4, dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0] + [0.0] * 8)
    weights = module.token_weights(rollout, adv, old)

    logits, hidden = module.policy_logits(module.policy, rollout, need_hidden=True)
    ids, mask = rollout.completion_ids[:4], rollout.completion_mask[:4]
    vocab = nthr.group_vocabulary(ids, mask)
    want = nthr.group_token_weights(ids, mask, hidden[:4], torch.softmax(logits[:4].float(), -1)[..., vocab], vocab,
                                    old["nthr_correct"][:4], adv[:4], beta_nthr=1.0, eta=0.0)
    torch.testing.assert_close(weights[:4], want.weights)
    assert torch.equal(weights[4:], torch.ones_like(weights[4:]))  # all right / all wrong
    assert module.nthr_stats["nthr/mixed_groups"] == pytest.approx(1 / 3)
    negative = float((mask.bool() & (adv[:4] < 0)[:, None]).sum())
    assert module.nthr_stats["nthr/frac_downweighted"] == pytest.approx(float(want.selected.sum()) / negative)

    # a hugely negative threshold selects every negative token, and only those
    module.hparams.beta_nthr = -1e9
    weights = module.token_weights(rollout, adv, old)
    neg = mask.bool() & (adv[:4] < 0)[:, None]
    assert torch.equal(weights[:4] == 0, neg) and module.nthr_stats["nthr/frac_downweighted"] == 1.0


def fit(module, steps=2):
    L.seed_everything(0)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, EvenLengthData(batch_size=2))
    return trainer


def test_eta_one_is_exactly_grpo_and_eta_zero_is_not():
    grpo, same, dropped = tiny(GRPO), tiny(eta=1.0, beta_nthr=-1e9), tiny(eta=0.0, beta_nthr=-1e9)
    fit(grpo), fit(same)
    trainer = fit(dropped)
    assert trainer.callback_metrics["nthr/mixed_groups"] > 0
    assert trainer.callback_metrics["nthr/frac_downweighted"] == 1.0
    for a, b, c in zip(grpo.policy.parameters(), same.policy.parameters(), dropped.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert any(not torch.allclose(a, c) for a, c in zip(grpo.policy.parameters(), dropped.policy.parameters()))


def test_filter_zero_std_groups_masks_constant_groups(monkeypatch):
    module = tiny(filter_zero_std_groups=True)
    rollout = rollout_for(module, n_prompts=2)
    problems = [EvenLengthData().train_dataset()[i // 4] for i in range(8)]
    old: dict = {}
    scores = [1.0] * 4 + [1.0, 0.0, 0.0, 1.0]  # group 0 constant, group 1 mixed
    module.compute_rewards(problems, rollout, scores, old)
    assert old["nthr_keep_rows"].tolist() == [False] * 4 + [True] * 4
    assert old["nthr_correct"].tolist() == [s >= 1 for s in scores]
    seen = {}

    def capture(self, rollout, advantages, mask, old, weights):
        seen["mask"] = mask
        return {}

    monkeypatch.setattr(GRPO, "update", capture)
    mask = rollout.completion_mask.float()
    module.update(rollout, torch.zeros(8), mask, old, None)
    assert torch.equal(seen["mask"][:4], torch.zeros_like(mask[:4])) and torch.equal(seen["mask"][4:], mask[4:])


def test_toy_config_runs_through_the_cli(tmp_path):
    cli_main(["fit", "--config", "configs/nthr/toy_char_fill.yaml", "--trainer.max_steps", "2",
              "--trainer.enable_progress_bar", "false", "--model.init_args.max_new_tokens", "6",
              f"--trainer.default_root_dir={tmp_path}"])  # the report and checkpoints go there, not into the repo


def test_bad_eta_fails_with_one_clear_line():
    with pytest.raises(ValueError, match="adaptive"):
        tiny(eta="sometimes")
