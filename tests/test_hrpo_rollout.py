"""The latent-mixing rollout (lit_reason/rollout/latent.py): cache equivalence, position bookkeeping,
delimiter handling, and the training forward's reproduction of the rollout's log-probs."""

import pytest
import torch

from lit_reason.algorithms import objectives as obj
from lit_reason.algorithms.hybrid import latent_from_logits
from lit_reason.rollout.latent import GATE, LATENTS, MIX, SHARE, DelimiterTracker, HybridRolloutEngine
from lit_reason.modules.grpo import GRPO
from lit_reason.modules.hrpo import HRPO
from lit_reason.rollout import RolloutEngine, positions_from_mask
from lit_reason.models.tokenizer import build_char_tokenizer

PROMPTS = ["Write e.", "Say hello there", "1+2=", "abc"]


def make_module(preset="tiny", **kwargs):
    torch.manual_seed(0)
    args = dict(model=preset, num_generations=2, max_new_tokens=24, prompt_format="plain", delimiter="e",
                r_min=0.5, r_max=0.6, temperature=0.7)  # a strong mix, so a wrong input shows in the log-probs
    args.update(kwargs)
    return HRPO(**args)


def rollout_for(module, engine=None, seed=0):
    ids, mask = module.encode_prompts(PROMPTS)
    engine = engine or module.engine
    module.policy.eval()
    return engine.generate(ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0), torch.Generator().manual_seed(seed))


def uncached_reference_decode(engine: HybridRolloutEngine, prompt_ids, prompt_mask, generator):
    """Re-run the whole prefix (as inputs_embeds) at every step: no KV cache. Same sampler, same gate;
    like the engine, only rows still decoding draw from the generator."""
    model, table = engine.model, engine.model.get_input_embeddings()
    embeds, attention = table(prompt_ids), prompt_mask.long()
    batch = prompt_ids.shape[0]
    tracker = DelimiterTracker(engine.tokenizer, engine.delimiter, batch, prompt_ids.device)
    eos = torch.tensor(engine.eos_ids)
    done = torch.zeros(batch, dtype=torch.bool)
    tokens_seen, latents, mixes = [], [], []
    with torch.no_grad():
        for step in range(engine.config.max_new_tokens):
            logits = model(inputs_embeds=embeds, attention_mask=attention, position_ids=positions_from_mask(attention),
                           use_cache=False).logits[:, -1]
            running = (~done).nonzero().flatten()
            tokens = torch.full((batch,), engine.pad_id)
            tokens[running] = engine._sample(logits[running], generator)[0]
            tokens_seen.append(tokens)
            done = done | torch.isin(tokens, eos)
            if bool(done.all()) or step + 1 == engine.config.max_new_tokens:
                break
            still = (~done).nonzero().flatten()  # a completion's last token is never fed back
            mix = torch.zeros(batch, dtype=torch.bool)
            mix[still] = tracker.update(tokens[still], still)
            e = table(tokens)
            h = latent_from_logits(logits, table.weight, engine.tau)
            mixed, _ = engine.gate(e, h, mix)
            embeds = torch.cat([embeds, mixed[:, None]], 1)
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
            latents.append(h)
            mixes.append(mix)
    return torch.stack(tokens_seen, 1), torch.stack(latents, 1), torch.stack(mixes, 1)


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_kv_cached_generation_equals_generation_without_cache(preset):
    module = make_module(preset, max_new_tokens=16)
    ids, mask = module.encode_prompts(PROMPTS)
    ids, mask = ids.repeat(2, 1), mask.repeat(2, 1)
    module.policy.eval()
    cached = module.engine.generate(ids, mask, torch.Generator().manual_seed(1))
    tokens, latents, mixes = uncached_reference_decode(module.engine, ids, mask, torch.Generator().manual_seed(1))
    assert torch.equal(cached.completion_ids, tokens)
    fed = latents.shape[1]
    assert fed == cached.completion_ids.shape[1] - 1
    assert (cached.lengths < fed).any()  # a row ended early: it left the engine's batch (compaction)
    fed_back = torch.arange(fed)[None, :] < (cached.lengths[:, None] - 1)  # a completion's last token is never fed
    assert torch.equal(cached.extras[MIX][:, :fed], mixes & fed_back)
    assert torch.allclose(cached.extras[LATENTS][:, :fed][fed_back], latents[fed_back], atol=1e-5)


def test_reasoning_mask_ends_at_the_token_that_completes_the_delimiter():
    module = make_module()
    ro = rollout_for(module)
    tok = module.tokenizer
    saw_delimiter = 0
    for row in range(len(ro.texts)):
        n = int(ro.completion_mask[row].sum())
        ids = ro.completion_ids[row, :n].tolist()
        for t in range(ro.completion_ids.shape[1]):
            before_delimiter = t < n and "e" not in tok.decode(ids[: t + 1], skip_special_tokens=False)
            expected = before_delimiter and t < n - 1  # a completion's last token is never fed back
            assert bool(ro.extras[MIX][row, t]) == expected, (row, t)
        saw_delimiter += "e" in tok.decode(ids, skip_special_tokens=False)
    assert 0 < saw_delimiter < len(ro.texts)  # the seed gives rows with and without the delimiter
    gate, share, mix = ro.extras[GATE], ro.extras[SHARE], ro.extras[MIX]
    with torch.no_grad():  # stored gate values = the gate's a (and sqrt(1 - a^2)) of each fed token, averaged over H
        a, latent_share = module.gate.decay(module.policy.get_input_embeddings()(ro.completion_ids))
    assert torch.allclose(gate[mix], a.mean(-1)[mix], atol=1e-6)
    assert torch.allclose(share[mix], latent_share.mean(-1)[mix], atol=1e-5)
    assert ((gate[mix] > 0.5) & (gate[mix] < 1)).all() and (gate[~mix] == 1).all() and (share[~mix] == 0).all()


def test_delimiter_split_over_several_tokens():
    tok = build_char_tokenizer()
    tracker = DelimiterTracker(tok, "####", 2, torch.device("cpu"))
    rows = ["ab###x##", "#a#b####"]
    states = []
    for t in range(8):
        tokens = torch.tensor([tok.convert_tokens_to_ids(r[t]) for r in rows])
        states.append(tracker.update(tokens).clone())
    # row 0 never holds "####" contiguously; row 1 completes it at its 8th character
    assert [bool(s[0]) for s in states] == [True] * 8
    assert [bool(s[1]) for s in states] == [True] * 7 + [False]


def test_delimiter_tracker_syncs_once_per_step_and_decodes_only_possible_ends(monkeypatch):
    tok = build_char_tokenizer()
    tracker = DelimiterTracker(tok, "##", 3, torch.device("cpu"))
    tracker.update(torch.tensor([tok.convert_tokens_to_ids("a")] * 3))  # builds the token table
    syncs, decoded = [], []
    real_tolist, real_decode = torch.Tensor.tolist, tok.batch_decode
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: syncs.append(1) or real_tolist(t))
    for name in ("item", "__bool__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, lambda t: pytest.fail(f"host sync via {name}"))
    tok.batch_decode = lambda rows, **kw: decoded.append(len(rows)) or real_decode(rows, **kw)
    rows = ["xy#", "#x#", "yyy"]
    for t in range(3):
        tracker.update(torch.tensor([tok.convert_tokens_to_ids(r[t]) for r in rows]))
    assert len(syncs) == 3  # one per step
    assert decoded == [1, 2]  # only rows whose newest token is "#" (none at step 2: no decode)
    monkeypatch.undo()
    assert tracker.reasoning.tolist() == [True, True, True]
    tracker.update(torch.tensor([tok.convert_tokens_to_ids(c) for c in "##y"]))
    assert tracker.reasoning.tolist() == [False, False, True]  # "xy##" and "#x##" hold the delimiter


def test_latent_uses_the_table_in_its_own_dtype(monkeypatch):
    torch.manual_seed(0)
    table = torch.randn(300, 16).bfloat16()
    logits = torch.randn(4, 300)
    want = latent_from_logits(logits, table.float(), tau=0.5)
    big = []
    real_float = torch.Tensor.float
    monkeypatch.setattr(torch.Tensor, "float", lambda t: big.append(t.numel()) or real_float(t))
    got = latent_from_logits(logits, table, tau=0.5)
    monkeypatch.undo()
    assert max(big) < table.numel()  # no float32 copy of the table
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_training_forward_reproduces_rollout_logprobs():
    module = make_module()
    ro = rollout_for(module)
    mix = ro.extras[MIX]
    assert mix.any() and (~mix & ro.completion_mask.bool()).any()
    logits, _ = module.policy_logits(module.policy, ro)
    logps = obj.token_logps(logits, ro.completion_ids)
    m = ro.completion_mask.bool()
    assert (logps - ro.logprobs)[m].abs().max() < 1e-4
    # the check is sensitive: plain token ids (no latents) give clearly different log-probs
    plain, _ = GRPO.policy_logits(module, module.policy, ro)
    assert (obj.token_logps(plain, ro.completion_ids) - ro.logprobs)[m].abs().max() > 1e-2


def test_training_forward_on_a_row_subset_matches_too():
    module = make_module(preset="tiny-llama")
    ro = rollout_for(module, seed=5)
    part = ro.select(slice(2, 6))
    logps = obj.token_logps(module.policy_logits(module.policy, part)[0], part.completion_ids)
    assert (logps - part.logprobs)[part.completion_mask.bool()].abs().max() < 1e-4


def test_greedy_evaluation_mixes_latents():
    module = make_module()
    assert isinstance(module.val_engine, HybridRolloutEngine) and module.val_engine.config.greedy
    assert module.val_engine.gate is module.gate
    greedy = rollout_for(module, engine=module.val_engine)
    assert greedy.extras[MIX].any()
    plain_engine = RolloutEngine(module.policy, module.tokenizer, module.val_sampling)
    plain = rollout_for(module, engine=plain_engine)
    assert not torch.equal(greedy.completion_ids, plain.completion_ids)  # the latents change what is decoded
    logps = obj.token_logps(module.policy_logits(module.policy, greedy)[0] * 0.7, greedy.completion_ids)
    assert (logps - greedy.logprobs)[greedy.completion_mask.bool()].abs().max() < 1e-4  # T=0.7 undone: raw logits
