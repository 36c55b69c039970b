"""Rollout engine: masks, stop conditions, padding, seeding and log-prob agreement."""

from types import SimpleNamespace

import pytest
import torch

from lit_reason.rollout import RolloutEngine, SamplingConfig, filter_logits, positions_from_mask
from lit_reason.models.tokenizer import build_char_tokenizer


class ScriptedCache:
    """Stands in for a KV cache: the decoding step and which original rows are still batched."""

    def __init__(self, rows: list[int]) -> None:
        self.step, self.rows = 0, rows

    def batch_select_indices(self, keep: torch.Tensor) -> None:
        self.rows = [self.rows[i] for i in keep.tolist()]


class ScriptedLM(torch.nn.Module):
    """A fake causal LM that emits ``script[row][step]`` (greedy), to test bookkeeping exactly,
    including the engine dropping finished rows from the batch and cache."""

    def __init__(self, scripts: list[list[int]], vocab: int) -> None:
        super().__init__()
        self.scripts, self.vocab = scripts, vocab
        self.embed = torch.nn.Embedding(vocab, 4)
        self.generation_config = SimpleNamespace(eos_token_id=None)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids=None, inputs_embeds=None, past_key_values=None, **kwargs):
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        if past_key_values is None:
            cache = ScriptedCache(list(range(batch)))
        else:
            cache = past_key_values
            cache.step += 1
        assert len(cache.rows) == batch
        logits = torch.zeros(batch, 1, self.vocab)
        for i, row in enumerate(cache.rows):
            script = self.scripts[row]
            logits[i, 0, script[min(cache.step, len(script) - 1)]] = 10.0
        return SimpleNamespace(logits=logits, past_key_values=cache)


@pytest.fixture
def tok():
    return build_char_tokenizer()


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def run_scripted(tok, scripts, **cfg):
    model = ScriptedLM(scripts, len(tok))
    engine = RolloutEngine(model, tok, SamplingConfig(temperature=0.0, **cfg))
    prompt = torch.tensor([ids_of(tok, "Q")] * len(scripts))
    return engine.generate(prompt, torch.ones_like(prompt))


def test_mask_includes_first_eos_and_pads_after(tok):
    eos = tok.eos_token_id
    a, b = ids_of(tok, "ab")
    r = run_scripted(tok, [[a, b, eos, a, a], [a, a, a, a, a]], max_new_tokens=5)
    assert r.completion_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert r.completion_ids[0, :3].tolist() == [a, b, eos]
    assert r.completion_ids[0, 3:].tolist() == [tok.pad_token_id] * 2  # nothing sampled after EOS
    assert r.truncated.tolist() == [False, True]
    assert r.texts == ["ab", "aaaaa"]


def test_finished_rows_leave_the_batch_without_disturbing_the_others(tok):
    eos = tok.eos_token_id
    a, b, c = ids_of(tok, "abc")
    r = run_scripted(tok, [[a, eos], [b, b, b, b, eos], [c, eos], [a, b, c, a, b, c]], max_new_tokens=6)
    assert r.texts == ["a", "bbbb", "c", "abcabc"]
    assert r.completion_mask.sum(-1).tolist() == [2, 5, 2, 6]
    assert r.truncated.tolist() == [False, False, False, True]


def test_stops_early_when_all_rows_finish(tok):
    eos = tok.eos_token_id
    a = ids_of(tok, "a")[0]
    r = run_scripted(tok, [[a, eos], [eos]], max_new_tokens=50)
    assert r.completion_ids.shape[1] == 2
    assert r.truncated.tolist() == [False, False]


def test_stop_string_ends_row_and_is_kept(tok):
    body = ids_of(tok, "x<answer>7</answer>yyyy")
    r = run_scripted(tok, [body], max_new_tokens=12, stop_strings=["</answer>"])
    assert r.texts == ["x<answer>7</answer>"]
    assert r.completion_mask.sum().item() == len(ids_of(tok, "x<answer>7</answer>"))
    assert not r.truncated.item()


def test_filter_logits_top_k_top_p_min_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # nucleus .7: .5 then .3 (cumulative .8 >= .7) kept, the rest dropped
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    # min_p .4: keep p >= .4 * .5 = .2
    assert torch.isinf(filter_logits(logits, min_p=0.4)).tolist() == [[False, False, True, True]]


def test_positions_from_left_padded_mask():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def _encode(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc.input_ids, enc.attention_mask


def test_left_padding_does_not_change_greedy_output(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    engine = RolloutEngine(model, tok, SamplingConfig(max_new_tokens=12, temperature=0.0))
    alone = engine.generate(*_encode(tok, ["2+3="]))
    batched = engine.generate(*_encode(tok, ["2+3=", "a much longer prompt than the other"]))
    assert alone.completion_ids[0].tolist() == batched.completion_ids[0].tolist()
    torch.testing.assert_close(alone.logprobs[0], batched.logprobs[0], atol=1e-5, rtol=0)


def test_seeded_sampling_is_reproducible_and_seed_sensitive(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    engine = RolloutEngine(model, tok, SamplingConfig(max_new_tokens=16, temperature=1.0, top_p=0.95))
    ids, mask = _encode(tok, ["hello", "hi"])
    run = lambda seed: engine.generate(ids, mask, torch.Generator().manual_seed(seed)).completion_ids  # noqa: E731
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_sampling_logprobs_match_training_forward(tiny_policy):
    """The engine's log-probs equal a full no-cache forward over prompt + completion."""
    from lit_reason.algorithms.objectives import token_logps

    model, tok = tiny_policy.model, tiny_policy.tokenizer
    engine = RolloutEngine(model, tok, SamplingConfig(max_new_tokens=10, temperature=0.7))
    ids, mask = _encode(tok, ["abc", "a longer prompt"])
    r = engine.generate(ids, mask, torch.Generator().manual_seed(0))
    full_ids = torch.cat([r.prompt_ids, r.completion_ids], 1)
    full_mask = torch.cat([r.prompt_mask, r.completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=full_ids, attention_mask=full_mask, position_ids=positions_from_mask(full_mask)).logits
    t = r.completion_ids.shape[1]
    lp = token_logps(logits[:, -t - 1 : -1] / 0.7, r.completion_ids)
    m = r.completion_mask.bool()
    torch.testing.assert_close(lp[m], r.logprobs[m], atol=1e-4, rtol=0)


def test_bad_sampling_config_fails_with_one_line():
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)


def test_stop_string_table_flags_only_tokens_that_share_a_character(tok):
    from lit_reason.rollout.stop_strings import completing_tokens

    flags = completing_tokens(tok, ["</answer>", "##"], len(tok) + 3)
    text = lambda i: tok.decode([i], skip_special_tokens=False)  # noqa: E731
    for i in range(len(tok)):
        shares = bool(set(text(i)) & set("</answer>##")) or not text(i)
        assert bool(flags[i]) == shares, (i, text(i))
    assert flags[len(tok):].all()  # ids the tokenizer does not know are always checked
    tok_cleanup = build_char_tokenizer()
    tok_cleanup.clean_up_tokenization_spaces = True  # " ." -> "." can join text across tokens
    assert completing_tokens(tok_cleanup, ["x."], len(tok)).all()
    assert not completing_tokens(tok_cleanup, ["xy"], len(tok)).all()


def test_stop_strings_end_rows_exactly_where_decoding_every_row_would(tok):
    """Random scripts, several stop strings (one spanning tokens that also occur alone): the
    engine's row ends equal a brute-force decode of every row's tail at every step, while it
    decodes only rows whose newest token could complete a stop string."""
    stops = ["</answer>", "ab", "\n\n"]
    alphabet = ids_of(tok, "ab</answer>xyz\n 7")
    gen = torch.Generator().manual_seed(0)
    scripts = [[alphabet[int(i)] for i in torch.randint(0, len(alphabet), (30,), generator=gen)] for _ in range(12)]
    window = max(len(s) for s in stops) + 8

    def brute_force_length(script):
        for t in range(len(script)):
            if any(s in tok.decode(script[max(0, t + 1 - window) : t + 1], skip_special_tokens=False) for s in stops):
                return t + 1
        return len(script)

    decoded_rows = []
    real = tok.batch_decode

    def counting(rows, **kw):
        decoded_rows.append(len(rows))
        return real(rows, **kw)

    tok.batch_decode = counting
    try:
        r = run_scripted(tok, scripts, max_new_tokens=30, stop_strings=stops)
    finally:
        del tok.batch_decode
    assert r.completion_mask.sum(-1).tolist() == [brute_force_length(s) for s in scripts]
    assert any(n < len(scripts) for n in decoded_rows[1:])  # rows were skipped (the first call builds the table)
    brute = sum(min(brute_force_length(s), 30) for s in scripts)  # row-steps the old loop decoded
    assert sum(decoded_rows[1:]) - len(scripts) < brute  # minus the final texts of assemble()
