"""The static-cache engine against the plain engine and the training forward (CPU, no compile).

The CUDA-graph speed-up itself needs a GPU; here we check what makes it safe to switch on: same
tokens and log-probs as the plain engine (greedy and seeded sampling), log-probs equal to the
training forward's, a decode step that traces as ONE graph with no recompiles, and the fallback.
"""

from __future__ import annotations

import pytest
import torch

from lit_reason.algorithms import objectives as obj
from lit_reason.rollout.static_cache import StaticCacheRolloutEngine
from lit_reason.modules import GRPO
from lit_reason.models.policy import load_policy
from lit_reason.rollout import RolloutEngine, SamplingConfig

PROMPTS = ["Write the letter a.", "bcd", "Is 17 prime? Say yes or no."]
G = 3


EOS_BIAS = {"value": 3.0}  # sampling: mean length ~ a quarter of the limit; greedy needs less


@pytest.fixture(scope="module")
def policy():
    """The tiny preset with its EOS logit raised, so completion lengths spread out as in real RL."""
    torch.manual_seed(0)
    loaded = load_policy("tiny")
    model, tok = loaded.model.eval(), loaded.tokenizer
    eos = tok.eos_token_id
    model.lm_head.register_forward_hook(lambda mod, inp, out: out.index_add(
        -1, torch.tensor([eos]), torch.full_like(out[..., :1], EOS_BIAS["value"])))
    return model, tok


def prompts(tok, texts=PROMPTS):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc.input_ids.repeat_interleave(G, 0), enc.attention_mask.repeat_interleave(G, 0)


def plain_engine(model, tok, cfg, compact=False):
    engine = RolloutEngine(model, tok, cfg)
    engine.compact_finished_rows = compact  # compaction changes which rows the sampler draws for
    return engine


def static_engine(model, tok, cfg, **kwargs):
    return StaticCacheRolloutEngine(model, tok, cfg, static_on=("cpu",), compile=False, cache_bucket=16, **kwargs)


def assert_same_rollout(a, b, logp_tol=1e-5):
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert torch.equal(a.truncated, b.truncated)
    assert a.texts == b.texts
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=logp_tol, rtol=0)


def test_greedy_matches_plain_engine_with_and_without_compaction(policy, monkeypatch):
    model, tok = policy
    monkeypatch.setitem(EOS_BIAS, "value", 0.5)  # greedy rows then end after 10 tokens or run to the limit
    cfg = SamplingConfig(max_new_tokens=24, temperature=0.0)
    ids, mask = prompts(tok)
    fast = static_engine(model, tok, cfg).generate(ids, mask)
    assert fast.lengths.unique().numel() > 1  # rows end at different steps
    assert_same_rollout(fast, plain_engine(model, tok, cfg).generate(ids, mask))
    assert_same_rollout(fast, plain_engine(model, tok, cfg, compact=True).generate(ids, mask))


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_seeded_sampling_matches_plain_engine(policy, temperature, top_p):
    model, tok = policy
    cfg = SamplingConfig(max_new_tokens=24, temperature=temperature, top_p=top_p)
    ids, mask = prompts(tok)
    fast = static_engine(model, tok, cfg).generate(ids, mask, torch.Generator().manual_seed(7))
    plain = plain_engine(model, tok, cfg).generate(ids, mask, torch.Generator().manual_seed(7))
    assert fast.lengths.unique().numel() > 1  # rows end at different steps: finished rows ride along
    assert_same_rollout(fast, plain)


def test_stop_strings_end_rows_like_the_plain_engine(policy):
    model, tok = policy
    cfg = SamplingConfig(max_new_tokens=24, temperature=1.0, stop_strings=("a", "e"))
    ids, mask = prompts(tok)
    fast = static_engine(model, tok, cfg).generate(ids, mask, torch.Generator().manual_seed(1))
    plain = plain_engine(model, tok, cfg).generate(ids, mask, torch.Generator().manual_seed(1))
    assert_same_rollout(fast, plain)
    assert any(t.endswith(("a", "e")) for t in fast.texts)


def test_cache_is_reused_and_reset_between_rollouts(policy):
    model, tok = policy
    cfg = SamplingConfig(max_new_tokens=20, temperature=1.0)
    engine = static_engine(model, tok, cfg)
    ids, mask = prompts(tok)
    first = engine.generate(ids, mask, torch.Generator().manual_seed(3))
    cache = engine._cache
    other = engine.generate(*prompts(tok, ["zz", "q"]), torch.Generator().manual_seed(5))  # a smaller batch
    assert engine._cache is cache  # rides in the same cache (idle rows)
    again = engine.generate(ids, mask, torch.Generator().manual_seed(3))
    again2 = engine.generate(ids, mask, torch.Generator().manual_seed(3))
    assert engine._cache is not None and other.completion_ids.shape[0] == 2 * G
    assert_same_rollout(first, again)  # stale keys/values from the previous rollout never leak in
    assert_same_rollout(first, again2)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_the_training_forward(temperature):
    """The mismatch users report with fast engines: here sampling and training log-probs agree to 1e-4."""
    torch.manual_seed(0)
    module = GRPO(model="tiny", num_generations=G, max_new_tokens=16, temperature=temperature, prompt_format="plain")
    engine = static_engine(module.policy, module.tokenizer, module.sampling)
    problems = [type("P", (), {"prompt": p})() for p in PROMPTS]
    rollout = module.generate(problems, engine=engine, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = module.policy_logits(module.policy, rollout)
        train_logps = obj.token_logps(logits, rollout.completion_ids)
    live = rollout.completion_mask.bool()
    assert live.sum() > 20
    assert (rollout.logprobs[live] - train_logps[live]).abs().max() < 1e-4


def test_compiled_decode_step_is_one_graph_without_recompiles(policy):
    """torch.compile (eager backend on CPU) traces the decode step whole (fullgraph=True) and
    reuses it for every token and for a new prompt length in the same cache bucket."""
    from torch._dynamo.utils import counters

    model, tok = policy
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0)
    engine = StaticCacheRolloutEngine(model, tok, cfg, static_on=("cpu",), compile=True, compile_backend="eager",
                                      fullgraph=True, cache_bucket=64)
    torch._dynamo.reset()
    counters.clear()
    ids, mask = prompts(tok)
    compiled = engine.generate(ids, mask, torch.Generator().manual_seed(2))
    engine.generate(*prompts(tok, ["a", "bc", "def"]), torch.Generator().manual_seed(2))  # other prompt length
    eager = static_engine(model, tok, cfg).generate(ids, mask, torch.Generator().manual_seed(2))
    assert_same_rollout(compiled, eager)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]
    torch._dynamo.reset()


def test_decode_step_compiles_once_across_prompt_lengths_and_batch_sizes(policy):
    """With max_prompt_length the cache is allocated once (rows: the largest batch; positions:
    max_prompt_length + max_new_tokens): prompt lengths 2..27 and batches of 9, 3 and 6 rows take
    ONE compilation of the decode step (a counting backend), and a smaller batch riding in the
    larger cache (idle rows) still gives the plain engine's greedy tokens."""
    from torch._dynamo.testing import CompileCounter

    model, tok = policy
    cfg = SamplingConfig(max_new_tokens=10, temperature=0.0)
    counter = CompileCounter()
    engine = StaticCacheRolloutEngine(model, tok, cfg, static_on=("cpu",), compile=True, compile_backend=counter,
                                      cache_bucket=1, max_prompt_length=32)
    torch._dynamo.reset()
    batches = [PROMPTS, ["a"], ["bc", "Sort 3 1 2 and say it."]]
    for texts in batches:
        ids, mask = prompts(tok, texts)
        out = engine.generate(ids, mask)
        assert_same_rollout(out, plain_engine(model, tok, cfg).generate(ids, mask))
    assert counter.frame_count == 1
    assert engine._cache_key[:2] == (9, 32 + 10)
    too_long = prompts(tok, ["x" * 40])  # longer than max_prompt_length: the cache grows, once
    engine.generate(*too_long)
    assert engine._cache_key[:2] == (9, too_long[0].shape[1] + 10) and counter.frame_count == 2
    torch._dynamo.reset()


def test_cpu_falls_back_to_the_plain_engine(policy):
    model, tok = policy
    cfg = SamplingConfig(max_new_tokens=16, temperature=1.0)
    engine = StaticCacheRolloutEngine(model, tok, cfg)  # static path on CUDA only
    ids, mask = prompts(tok)
    out = engine.generate(ids, mask, torch.Generator().manual_seed(4))
    assert engine._cache is None
    plain = RolloutEngine(model, tok, cfg).generate(ids, mask, torch.Generator().manual_seed(4))  # compacting
    assert_same_rollout(out, plain)


def test_latent_engines_are_refused(policy):
    class Mixing(StaticCacheRolloutEngine):
        def next_inputs_embeds(self, tokens, logits, step, state):
            return super().next_inputs_embeds(tokens, logits, step, state)

    with pytest.raises(TypeError, match="plain token ids"):
        Mixing(*policy, SamplingConfig())


def test_grpo_picks_the_static_engine_only_with_cuda(monkeypatch):
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4)
    assert type(module.engine) is RolloutEngine  # no CUDA here: CPU path unchanged
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert isinstance(module.build_engine(module.sampling), StaticCacheRolloutEngine)
    module.hparams.fast_generation = False
    assert type(module.build_engine(module.sampling)) is RolloutEngine


@pytest.mark.parametrize("sharded", ["fsdp1", "zero3", None])
def test_sharded_weights_on_one_device_sample_with_the_plain_engine(monkeypatch, sharded):
    """FSDP / ZeRO-3 on ONE device: the static engine is swapped for the plain one (its compiled
    graphs would capture the weight gathers); lockstep decoding is only for several ranks. An
    unsharded strategy keeps the static engine."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4)
    assert isinstance(module.engine, StaticCacheRolloutEngine)
    strategy = {"fsdp1": FSDPStrategy(), "zero3": SimpleNamespace(config={"zero_optimization": {"stage": 3}}),
                None: SimpleNamespace(config=None)}[sharded]
    module._trainer = SimpleNamespace(strategy=strategy, world_size=1)
    module._setup_strategy()
    for engine in (module.engine, module.val_engine):
        assert (type(engine) is RolloutEngine) == (sharded is not None)
        assert engine.all_ranks_done is None


def test_static_cache_length_benchmark_runs_and_reports_a_consistent_ratio(monkeypatch):
    """benchmarks/static_cache_length.py (docs/vs_trl.md), tiny sizes: both caches measured,
    GRPO's max_prompt_length one the longer, the ratio what the two rates give."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    sys.modules.pop("static_cache_length", None)
    import static_cache_length

    r = static_cache_length.main(["--repeats", "1", "--new-tokens", "4", "--group", "2"])
    assert r["max_prompt_length"]["cache_positions"] == 512 + 4 > r["bucket"]["cache_positions"] == 64
    ratio = r["max_prompt_length"]["tokens_per_s"] / r["bucket"]["tokens_per_s"]
    assert abs(r["ratio_max_prompt_length_vs_bucket"] - ratio) < 1e-2
