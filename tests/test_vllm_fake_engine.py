"""Colocated vLLM on CUDA, right by construction: a fake ``vllm`` module records what the session
and the rollout engine ask of it (no vLLM needed, so this runs in the main venv; the vLLM lane
runs it too). The call order of sleep / wake / sync, one request with ``n = G`` per unique prompt
and the sampler's RNG seeded once per (step, rank), the dtype, tensor parallelism refused, the local rank, ZeRO-3 refused and
``max_num_batched_tokens``."""

from __future__ import annotations

import os
from unittest import mock
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from lit_reason.rollout import SamplingConfig
from lit_reason.rollout import vllm_engine
from lit_reason.rollout.vllm_engine import VLLMOptions, VLLMRolloutEngine, VLLMSession, unique_prompt_runs
from tests.test_rollout_contract import head32_policy


class FakeLLM:
    """Records every call; ``generate`` answers request i, sample j with the tokens [i, j] + EOS."""

    def __init__(self, hf_tokenizer=None, **kwargs):
        self.kwargs, self.tokenizer, self.calls, self.requests = kwargs, hf_tokenizer, [], []

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags or ())))

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def collective_rpc(self, method, kwargs=None, **_):
        name = method if isinstance(method, str) else method.__name__
        if kwargs and "weights_iterator" in kwargs:
            list(kwargs["weights_iterator"])
            name += "(weights)"
        self.calls.append(("rpc", name))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append(("generate",))
        self.requests = list(zip(prompts, params))
        self.draw = torch.rand(4)  # what a colocated sampler draws from the process RNG
        eos = params[0].stop_token_ids[0]
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[5 + i, 5 + j, eos],
                                                         logprobs=[{5 + i: SimpleNamespace(logprob=-0.5)},
                                                                   {5 + j: SimpleNamespace(logprob=-0.25)},
                                                                   {eos: SimpleNamespace(logprob=-1.0)}])
                                         for j in range(p.n)]) for i, p in enumerate(params)]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__version__ = "0.32.0"
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def session_and_engine(options: VLLMOptions, steps: dict):
    model, tok = head32_policy()
    session = VLLMSession(model, tok, options, 64, optimizer_steps=lambda: steps["n"])
    session.llm = FakeLLM(tok)
    session.sync()  # what start() does once the engine exists
    session.llm.calls.clear()
    engine = VLLMRolloutEngine(session, tok, SamplingConfig(max_new_tokens=8, temperature=1.0))
    return session, engine, tok


def batch(tok, texts=("ab", "abcd", "b"), group=4):
    enc = tok(list(texts), return_tensors="pt", padding=True)
    return enc.input_ids.repeat_interleave(group, 0), enc.attention_mask.repeat_interleave(group, 0)


SYNC = [("rpc", "reload_weights(weights)"), ("rpc", "_refresh_lm_heads"), ("reset_prefix_cache",)]


def test_sleep_wake_sync_order_with_a_sync_every_step(fake_vllm):
    """sync_every=1: after a rollout, a level-2 sleep (nothing copied to host: the weights are
    pushed again anyway); before the next, wake the weights, re-initialise them, push the trainer's,
    then wake the KV cache, as the reference trainer and verl do."""
    steps = {"n": 0}
    session, engine, tok = session_and_engine(VLLMOptions(enable_sleep_mode=True, sync_every=1), steps)
    engine.generate(*batch(tok), torch.Generator().manual_seed(0))
    assert session.llm.calls == [("generate",), ("sleep", 2)]
    for n in (1, 1):  # a second rollout at the same step still re-pushes: level 2 dropped the weights
        session.llm.calls.clear()
        steps["n"] = n
        engine.generate(*batch(tok), torch.Generator().manual_seed(n))
        assert session.llm.calls == [("wake_up", ("weights",)), ("rpc", "reload_weights"), *SYNC,
                                     ("wake_up", ("kv_cache",)), ("generate",), ("sleep", 2)]


def test_sleep_wake_sync_order_with_sync_every_two(fake_vllm):
    """sync_every=2: a level-1 sleep (the weights must survive it), and a push only every 2 steps,
    between waking the weights and waking the KV cache."""
    steps = {"n": 0}
    session, engine, tok = session_and_engine(VLLMOptions(enable_sleep_mode=True, sync_every=2), steps)
    logs = []
    for n in range(4):
        steps["n"] = n
        session.llm.calls.clear()
        engine.generate(*batch(tok), torch.Generator().manual_seed(n))
        logs.append(list(session.llm.calls))
    wake_w, wake_kv, rollout = ("wake_up", ("weights",)), ("wake_up", ("kv_cache",)), [("generate",), ("sleep", 1)]
    assert logs[0] == rollout
    assert logs[1] == [wake_w, wake_kv, *rollout]
    assert logs[2] == [wake_w, *SYNC, wake_kv, *rollout]
    assert logs[3] == [wake_w, wake_kv, *rollout]


def test_one_request_with_n_equal_to_the_group_per_unique_prompt(fake_vllm):
    steps = {"n": 0}
    session, engine, tok = session_and_engine(VLLMOptions(), steps)
    ids, mask = batch(tok, group=4)
    out = engine.generate(ids, mask, torch.Generator().manual_seed(3))
    requests = session.llm.requests
    assert [p.n for _, p in requests] == [4, 4, 4]
    for (prompt, _), text in zip(requests, ("ab", "abcd", "b")):  # padding removed
        assert prompt["prompt_token_ids"] == tok(text)["input_ids"]
    assert all(p.seed is None for _, p in requests)  # no per-request sampler generators
    # rows come back in order: row r is request r // 4, sample r % 4
    assert out.completion_ids[:, :2].tolist() == [[5 + r // 4, 5 + r % 4] for r in range(12)]
    assert torch.equal(out.completion_mask.sum(-1), torch.full((12,), 3))


def test_greedy_asks_one_completion_per_prompt_and_copies_it_to_the_group(fake_vllm):
    """vLLM refuses n > 1 without sampling (seen in the vLLM lane: validation with temperature 0);
    greedy copies are identical anyway, so one is asked for and repeated."""
    session, _, tok = session_and_engine(VLLMOptions(), {"n": 0})
    engine = VLLMRolloutEngine(session, tok, SamplingConfig(max_new_tokens=8, temperature=0.0))
    ids, mask = batch(tok, group=4)
    out = engine.generate(ids, mask)
    assert [p.n for _, p in session.llm.requests] == [1, 1, 1]
    assert out.completion_ids[:, :2].tolist() == [[5 + r // 4, 5] for r in range(12)]


def test_the_sampler_rng_is_seeded_once_per_step_and_rank_and_the_trainers_restored(fake_vllm):
    steps = {"n": 0}
    session, engine, tok = session_and_engine(VLLMOptions(), steps)
    ids, mask = batch(tok)
    draws = {}
    for key in ((0, 5, 0), (0, 5, 0), (0, 6, 0), (0, 5, 1)):
        torch.manual_seed(123)
        trainer_next = torch.rand(3)
        torch.manual_seed(123)
        engine.generate(ids, mask, torch.Generator().manual_seed(hash(key) % 2**63))
        assert torch.equal(torch.rand(3), trainer_next)  # the trainer's stream is as if nothing ran
        draws.setdefault(key, []).append(session.llm.draw)
    assert torch.equal(*draws[(0, 5, 0)])  # the same (seed, step, rank): the same sampler stream
    assert not torch.equal(draws[(0, 5, 0)][0], draws[(0, 6, 0)][0])
    assert not torch.equal(draws[(0, 5, 0)][0], draws[(0, 5, 1)][0])


def test_unique_prompt_runs_by_hand():
    ids = torch.tensor([[0, 7, 8], [0, 7, 8], [9, 7, 8], [0, 7, 8]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1]])
    assert unique_prompt_runs(ids, mask) == [([7, 8], 2), ([9, 7, 8], 1), ([7, 8], 1)]


class OnDevice(torch.nn.Module):
    """A stand-in policy whose one parameter reports a device it does not need to be on."""

    def __init__(self, device: str, dtype=torch.float32):
        super().__init__()
        self.p = SimpleNamespace(device=torch.device(device), dtype=dtype)

    def parameters(self, recurse=True):
        yield self.p


def test_vllm_dtype_is_bfloat16_on_cuda_unless_set():
    assert vllm_engine._dtype_name(OnDevice("cuda:0"), VLLMOptions()) == "bfloat16"
    assert vllm_engine._dtype_name(OnDevice("cpu"), VLLMOptions()) == "float32"
    assert vllm_engine._dtype_name(OnDevice("cuda:0"), VLLMOptions(dtype="float16")) == "float16"


def test_tensor_parallelism_is_refused_in_one_line():
    from lit_reason.utils.config_dataclass import parse_config

    with pytest.raises(ValueError, match=r"tensor_parallel_size=2 is not supported.*set it to 1") as err:
        parse_config(VLLMOptions, {"tensor_parallel_size": 2}, "model.vllm")
    assert "\n" not in str(err.value)


def test_local_rank_comes_from_the_trainers_device(monkeypatch):
    model, tok = head32_policy()
    session = VLLMSession(OnDevice("cuda:3"), tok, VLLMOptions(), 64)
    assert session.local_rank() == 3
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert VLLMSession(model, tok, VLLMOptions(), 64).local_rank() == 1
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 9)  # global rank 9 of 16: node 2
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 16)
    with mock.patch.dict(os.environ):  # what _torchrun_env sets must not outlive the test
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            os.environ.pop(name, None)
        vllm_engine._torchrun_env(session.local_rank())
        assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("9", "16", "3")


def test_zero3_is_refused_before_training_and_in_the_sync():
    from lit_reason.modules import GRPO
    from lit_reason.rollout.weight_sync import inference_weights

    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4)
    module.hparams.rollout_engine = "vllm"
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(config={"zero_optimization": {"stage": 3}}),
                                      world_size=1)
    with pytest.raises(ValueError, match="ZeRO-3.*deepspeed_stage_2"):
        module._setup_strategy()
    layer = torch.nn.Linear(2, 2)
    layer.weight.ds_id = 0  # how DeepSpeed marks a partitioned parameter (its data is empty)
    with pytest.raises(ValueError, match="ZeRO-3 partitioned"):
        list(inference_weights(layer))


def test_engine_start_passes_max_num_batched_tokens_and_one_engine_per_rank(fake_vllm, monkeypatch):
    monkeypatch.setattr(vllm_engine, "inference_weights", lambda model, root=None: iter(()))
    model, tok = head32_policy()
    kwargs = []
    for options, length, expected in ((VLLMOptions(), 64, 8192), (VLLMOptions(), 10_000, 10_000),
                                      (VLLMOptions(max_num_batched_tokens=2048), 64, 2048)):
        session = VLLMSession(model, tok, options, length)
        fake_vllm.LLM = lambda **kw: FakeLLM(tok, **kw)
        session.start()
        kwargs.append(session.llm.kwargs)
        assert session.llm.kwargs["max_num_batched_tokens"] == expected
        assert [c[1] for c in session.llm.calls if c[0] == "rpc"][0] == "reload_weights(weights)"
        session.close()
    assert kwargs[0]["tensor_parallel_size"] == 1 and kwargs[0]["dtype"] == "float32"  # CPU: the policy's


def test_the_options_block_of_the_docs_parses():
    import re
    from pathlib import Path

    import yaml

    from lit_reason.utils.config_dataclass import parse_config

    text = (Path(__file__).resolve().parent.parent / "docs" / "vllm.md").read_text()
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    options = parse_config(VLLMOptions, block["model"]["init_args"]["vllm"], "model.vllm")
    assert options.tensor_parallel_size == 1 and options.max_num_batched_tokens is None and options.dtype is None
