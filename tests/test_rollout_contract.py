"""The rollout contract (lit_reason/rollout/contract.py), checked against every engine.

Engines: the built-in KV-cache engine, the static-cache engine (its static path, forced on CPU)
and colocated vLLM. The vLLM case runs where vLLM is installed (the .venv-vllm lane of
``.ci/vllm_lane.sh``) and is skipped elsewhere. The model is a random 2-layer Qwen2 with
head_dim 32 (vLLM's CPU attention has no kernel for the ``tiny`` preset's 16) and the project's
character tokenizer, so expected texts can be derived by hand from token ids.
"""

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from lit_reason.algorithms.objectives import token_logps
from lit_reason.rollout import RolloutEngine, SamplingConfig, StaticCacheRolloutEngine, positions_from_mask
from lit_reason.models.tokenizer import build_char_tokenizer

HAS_VLLM = importlib.util.find_spec("vllm") is not None
ENGINES = ["builtin", "static_cache", pytest.param("vllm", marks=[
    pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here (runs in .venv-vllm: .ci/vllm_lane.sh)"),
    pytest.mark.vllm])]


def head32_policy(seed: int = 0):
    """A random Qwen2 that vLLM's CPU backend can run (head_dim 32) and its character tokenizer."""
    tok = build_char_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, rope_theta=10000.0, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def saved_head32_policy(path, seed: int = 1):
    """:func:`head32_policy` saved as a ``from_pretrained`` directory (model and tokenizer) at ``path``."""
    model, tok = head32_policy(seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def policy():
    return head32_policy()


@pytest.fixture(scope="module")
def vllm_session(policy):
    if not HAS_VLLM:
        yield None
        return
    from lit_reason.rollout.vllm_engine import VLLMOptions, build_vllm_session

    model, tok = policy
    session = build_vllm_session(model, tok, VLLMOptions(kv_cache_gib=0.25, max_num_seqs=32), 64, 32)
    yield session
    session.close()


@pytest.fixture
def make_engine(request, policy, vllm_session):
    model, tok = policy

    def build(cfg: SamplingConfig, eos_token_ids=()):
        name = request.node.callspec.params["engine"]
        if name == "builtin":
            return RolloutEngine(model, tok, cfg, eos_token_ids)
        if name == "static_cache":
            return StaticCacheRolloutEngine(model, tok, cfg, eos_token_ids, static_on=("cpu",), compile=False,
                                            cache_bucket=16)
        from lit_reason.rollout.vllm_engine import VLLMRolloutEngine

        return VLLMRolloutEngine(vllm_session, tok, cfg, eos_token_ids)

    return build


def encode(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc.input_ids, enc.attention_mask


PROMPTS = ["2+3=", "a much longer prompt than that", "xyz"]


@pytest.mark.parametrize("engine", ENGINES)
def test_eos_ends_the_mask_at_its_first_occurrence(make_engine, policy, engine):
    """Make a token the greedy model emits at position 2 of row 0 an EOS: the row ends there, the
    EOS is kept, padding follows; rows that never emit it run to max_new_tokens, truncated."""
    _, tok = policy
    ids, mask = encode(tok, PROMPTS)
    free = make_engine(SamplingConfig(max_new_tokens=10, temperature=0.0)).generate(ids, mask)
    stop = int(free.completion_ids[0, 2])
    r = make_engine(SamplingConfig(max_new_tokens=10, temperature=0.0), eos_token_ids=[stop]).generate(ids, mask)
    for row in range(len(PROMPTS)):
        greedy = free.completion_ids[row].tolist()
        end = greedy.index(stop) + 1 if stop in greedy else None
        length = end or 10
        assert r.completion_mask[row].tolist() == [1] * length + [0] * (r.completion_ids.shape[1] - length)
        assert r.completion_ids[row, :length].tolist() == greedy[:length]
        assert r.completion_ids[row, length:].tolist() == [tok.pad_token_id] * (r.completion_ids.shape[1] - length)
        assert bool(r.truncated[row]) == (end is None)
    assert r.completion_mask[0].sum() <= 3


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_string_is_kept_and_ends_the_row(make_engine, policy, engine):
    _, tok = policy
    ids, mask = encode(tok, PROMPTS[:1])
    free = make_engine(SamplingConfig(max_new_tokens=12, temperature=0.0)).generate(ids, mask)
    greedy = free.completion_ids[0].tolist()
    text = tok.decode(greedy, skip_special_tokens=False)
    stop = text[3:5]
    # brute force: the first prefix of the greedy ids whose decoded text contains the stop string
    length = next(i + 1 for i in range(len(greedy)) if stop in tok.decode(greedy[: i + 1], skip_special_tokens=False))
    r = make_engine(SamplingConfig(max_new_tokens=12, temperature=0.0, stop_strings=(stop,))).generate(ids, mask)
    assert r.completion_ids[0, : r.lengths[0]].tolist() == greedy[:length]
    assert int(r.lengths[0]) == length and not bool(r.truncated[0])
    assert r.texts[0].endswith(stop) or stop not in r.texts[0]  # skip_special_tokens may hide a special one


@pytest.mark.parametrize("engine", ENGINES)
def test_truncation_flags_when_no_row_ends(make_engine, policy, engine):
    _, tok = policy
    ids, mask = encode(tok, PROMPTS)
    r = make_engine(SamplingConfig(max_new_tokens=3, temperature=0.0), eos_token_ids=[]).generate(ids, mask)
    ended = [tok.eos_token_id in row for row in r.completion_ids.tolist()]
    assert r.truncated.tolist() == [not e for e in ended]
    assert r.completion_ids.shape == (3, 3)


@pytest.mark.parametrize("engine", ENGINES)
def test_left_padding_does_not_change_the_completion(make_engine, policy, engine):
    _, tok = policy
    engine_ = make_engine(SamplingConfig(max_new_tokens=8, temperature=0.0))
    alone = engine_.generate(*encode(tok, PROMPTS[:1]))
    batched = engine_.generate(*encode(tok, PROMPTS))
    assert batched.prompt_mask[0].tolist()[0] == 0  # row 0 really is left-padded
    n = int(alone.lengths[0])
    assert alone.completion_ids[0, :n].tolist() == batched.completion_ids[0, :n].tolist()
    torch.testing.assert_close(alone.logprobs[0, :n], batched.logprobs[0, :n], atol=1e-4, rtol=0)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """What GRPO.sampling_generator builds: one stream per (seed, global step, rank)."""
    return torch.Generator().manual_seed(hash((seed, step, rank)) % (2**63))


@pytest.mark.parametrize("engine", ENGINES)
def test_sampling_is_reproducible_per_seed_step_rank(make_engine, policy, engine):
    _, tok = policy
    ids, mask = encode(tok, PROMPTS)
    engine_ = make_engine(SamplingConfig(max_new_tokens=12, temperature=1.0))
    draw = lambda *key: engine_.generate(ids, mask, step_generator(*key)).completion_ids  # noqa: E731
    assert torch.equal(draw(0, 5, 0), draw(0, 5, 0))
    assert not torch.equal(draw(0, 5, 0), draw(0, 6, 0))
    assert not torch.equal(draw(0, 5, 0), draw(0, 5, 1))


@pytest.mark.parametrize("engine", ENGINES)
def test_groups_are_problem_major(make_engine, policy, engine):
    """G repeated rows per prompt: greedy rows of a group agree; sampled rows of a group differ."""
    _, tok = policy
    G = 4
    ids, mask = encode(tok, PROMPTS[:2])
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
    greedy = make_engine(SamplingConfig(max_new_tokens=6, temperature=0.0)).generate(ids, mask)
    assert len(greedy.texts) == 2 * G
    assert len(set(greedy.texts[:G])) == 1 and len(set(greedy.texts[G:])) == 1
    assert torch.equal(greedy.prompt_ids[:G], ids[:G])
    sampled = make_engine(SamplingConfig(max_new_tokens=12, temperature=1.0)).generate(ids, mask, step_generator(0, 0, 0))
    assert len(set(sampled.texts[:G])) > 1


@pytest.mark.parametrize("engine", ENGINES)
def test_logprobs_are_the_trainers_under_the_temperature(make_engine, policy, engine):
    """Sampler log-probs equal a full forward's log softmax(logits / T) at the chosen tokens."""
    model, tok = policy
    ids, mask = encode(tok, PROMPTS)
    r = make_engine(SamplingConfig(max_new_tokens=10, temperature=0.7)).generate(ids, mask, step_generator(1, 0, 0))
    full_ids = torch.cat([r.prompt_ids, r.completion_ids], 1)
    full_mask = torch.cat([r.prompt_mask, r.completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=full_ids, attention_mask=full_mask, position_ids=positions_from_mask(full_mask)).logits
    t = r.completion_ids.shape[1]
    expected = token_logps(logits[:, -t - 1: -1] / 0.7, r.completion_ids)
    real = r.completion_mask.bool()
    torch.testing.assert_close(r.logprobs[real], expected[real], atol=1e-4, rtol=0)
    assert (r.logprobs[~real] == 0).all()
