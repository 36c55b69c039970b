"""The built-in engine's KV cache kept across an episode's turns (``RolloutEngine.generate_turn``,
``lit_reason/rollout/turn_cache.py``): a turn that continues the cache samples what a turn
recomputed from scratch samples, with the same log-probs, while prefilling only the appended
tokens; rows that ended early in the previous turn (set aside and put back, or riding along),
and rows dropped between turns, included."""

from __future__ import annotations

import pytest
import torch

from lit_reason.models.policy import load_policy
from lit_reason.rollout import RolloutEngine, SamplingConfig
from lit_reason.rollout.turn_cache import FinishedRows


@pytest.mark.parametrize("preset,rows_leave", [("tiny", True), ("tiny-llama", True), ("tiny", False)])
def test_a_continued_turn_samples_what_a_recomputed_turn_samples_and_prefills_only_the_appended_ids(preset, rows_leave,
                                                                                                    monkeypatch):
    if not rows_leave:  # a cache whose rows cannot be set aside: finished rows ride along to the turn's end
        monkeypatch.setattr(FinishedRows, "can_keep", staticmethod(lambda cache: False))
    loaded = load_policy(preset)
    model, tok = loaded.model.eval(), loaded.tokenizer
    # many end-of-turn ids: rows end turn 1 at different steps, leaving holes in the kept cache
    frequent = tok("aeiou ", add_special_tokens=False)["input_ids"]
    engine = RolloutEngine(model, tok, SamplingConfig(max_new_tokens=12, temperature=1.0), eos_token_ids=frequent)
    assert engine.keeps_turn_cache
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in ("What is 2+2?", "Hi", "Count to three, slowly.")]
    rows = [p for p in prompts for _ in range(2)]
    first, past = engine.generate_turn(rows, None, torch.Generator().manual_seed(0), "cpu", keep=True)
    lengths = first.completion_mask.sum(-1).tolist()
    assert len(set(lengths)) > 1  # some rows ended early: their later cached positions are masked out
    env = tok("\nNo. Try again.\n", add_special_tokens=False)["input_ids"]
    episodes = [row + first.completion_ids[i, :n].tolist() + env for i, (row, n) in enumerate(zip(rows, lengths))]
    # a row that left the batch when it ended holds its tokens but the last sampled one; a row that
    # rode along holds them all, but for the turn's last sampled token
    held = [n - 1 if rows_leave else min(n, first.completion_ids.shape[1] - 1) for n in lengths]
    assert past.fed.tolist() == [len(row) + h for row, h in zip(rows, held)]

    live = [0, 2, 3, 5]  # two episodes ended after turn 1
    kept, _ = engine.generate_turn([episodes[i] for i in live], past.select(live), torch.Generator().manual_seed(1), "cpu")
    fresh, _ = engine.generate_turn([episodes[i] for i in live], None, torch.Generator().manual_seed(1), "cpu", keep=True)
    appended = max(len(episodes[i]) - int(past.fed[i]) for i in live)
    assert kept.prompt_ids.shape[1] == appended < fresh.prompt_ids.shape[1] // 2  # only the new tokens were read
    assert torch.equal(kept.completion_ids, fresh.completion_ids)
    assert torch.equal(kept.completion_mask, fresh.completion_mask)
    assert torch.allclose(kept.logprobs, fresh.logprobs, atol=1e-5, rtol=0), (kept.logprobs - fresh.logprobs).abs().max()

    # and both equal the log-probs of one forward over the whole episode (the training forward's view)
    for row, i in enumerate(live):
        n = int(kept.completion_mask[row].sum())
        ids = torch.tensor([episodes[i] + kept.completion_ids[row, :n].tolist()])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(episodes[i]) - 1: -1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, ids[0, len(episodes[i]):, None])[:, 0]
        assert torch.allclose(kept.logprobs[row, :n], expected, atol=1e-5, rtol=0)


def test_a_row_with_nothing_appended_falls_back_to_a_full_prefill():
    loaded = load_policy("tiny")
    model, tok = loaded.model.eval(), loaded.tokenizer
    engine = RolloutEngine(model, tok, SamplingConfig(max_new_tokens=4, temperature=1.0))
    rows = [tok("abc", add_special_tokens=False)["input_ids"]]
    first, past = engine.generate_turn(rows, None, torch.Generator().manual_seed(0), "cpu")
    n = int(first.completion_mask[0].sum())
    same = [rows[0] + first.completion_ids[0, :n - 1].tolist()]  # everything it holds is already in the cache
    again, _ = engine.generate_turn(same, past, torch.Generator().manual_seed(0), "cpu")
    assert again.prompt_ids.shape[1] == len(same[0])  # recomputed from the start, not continued from nothing
