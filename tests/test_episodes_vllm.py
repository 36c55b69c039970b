"""Multi-turn episodes sampled by colocated vLLM (runs in the .venv-vllm lane, ``.ci/vllm_lane.sh``).

Each turn sends the episode's token ids so far (prompt + sampled ids + tokenised environment
turns) to vLLM as a token-id prompt; the checks of ``tests/test_episodes.py`` then hold unchanged:
the training forward's log-probs equal vLLM's sampler log-probs at every sampled token over whole
episodes (fp32, 1e-4, both LM-head paths) under the template that re-renders earlier turns
differently, and GRPO trains on those episodes. One vLLM engine for the tiny-model tests (started
once, module-scoped): the lane's random 2-layer Qwen2 with head_dim 32 (the ``tiny`` preset's
head_dim 16 has no vLLM CPU kernel); a second for SmolLM2-135M-Instruct where it is in the cache."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

from tests.test_episodes import check_sampled_tokens_are_trained, fit, never_right, problem
from tests.test_rollout_contract import saved_head32_policy
from tests.test_vllm_engine import SMOLLM

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                   reason="vLLM is not installed here (runs in .venv-vllm: .ci/vllm_lane.sh)")]


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    from lit_reason.modules import GRPO

    path = saved_head32_policy(tmp_path_factory.mktemp("head32"))
    torch.manual_seed(0)
    grpo = GRPO(model=str(path), num_generations=3, max_new_tokens=10, sampling_seed=0, max_prompt_length=64,
                lr=2e-2, rollout_engine="vllm", rollout_correction={"level": "token", "cap": 2.0},
                vllm={"kv_cache_gib": 0.25, "max_num_seqs": 16, "sync_every": 1},
                episodes={"environment": "retry", "environment_args": {"attempts": 3}, "max_turns": 3,
                          "max_episode_tokens": 200})
    yield grpo
    if getattr(grpo, "_vllm_session", None) is not None:
        grpo._vllm_session.close()


def test_vllm_episode_logprobs_equal_the_training_forward_under_a_template_that_rewrites_earlier_turns(module):
    from lit_reason.rollout.vllm_engine import VLLMRolloutEngine

    assert isinstance(module.engine, VLLMRolloutEngine)
    step = check_sampled_tokens_are_trained(module, [problem(), problem("7")], min_multi_turn=4)
    assert step.metrics["episodes/turns_mean"] > 1.5
    session = module._vllm_session
    assert session.max_model_len == 64 + 200 + 10  # room for the longest episode's last turn
    assert session.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching  # later turns reuse the prefix


def test_grpo_fits_on_vllm_episodes_with_the_engine_in_sync(module):
    """Two GRPO steps on vLLM-sampled episodes: the weights move, vLLM is re-synced before the second
    rollout, and the rollout-correction KL between vLLM's and the trainer's log-probs over the
    episodes' sampled tokens stays at kernel noise (a stale or shifted episode would show here)."""
    before = [p.detach().clone() for p in module.policy.parameters()]
    syncs = module._vllm_session.syncs
    trainer = fit(module, [problem(), problem("7")], steps=2)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, p) for a, p in zip(before, module.policy.parameters()))
    assert module._vllm_session.syncs == syncs + 1  # pushed after the first optimizer step
    metrics = trainer.callback_metrics
    assert metrics["episodes/turns_mean"] > 1.0
    assert metrics["rollout_correction/kl_max"] < 1e-3
    assert math.isfinite(float(metrics["train/loss" if "train/loss" in metrics else "loss"]))


@pytest.mark.real_model
@pytest.mark.skipif(not os.path.isdir(SMOLLM), reason="the converted SmolLM2-135M-Instruct is not in the cache (make model)")
def test_smollm2_vllm_two_turn_episode_logprobs_equal_the_training_forward():
    """SmolLM2-135M-Instruct in fp32 on vLLM: the same check over two-turn episodes (measured max
    |difference| 3.8e-5 on vLLM 0.32 CPU)."""
    from lit_reason.modules import GRPO

    torch.manual_seed(0)
    grpo = GRPO(model="smollm2-135m-instruct", num_generations=2, max_new_tokens=8, sampling_seed=0, temperature=1.0,
                max_prompt_length=128, rollout_engine="vllm", vllm={"kv_cache_gib": 0.5, "max_num_seqs": 16},
                episodes={"environment": "retry", "environment_args": {"attempts": 2}, "max_turns": 2})
    try:
        step = check_sampled_tokens_are_trained(grpo, [never_right()])
        assert (step.rollout.extras["turns"] == 2).all()
    finally:
        grpo._vllm_session.close()
