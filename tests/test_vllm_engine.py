"""Colocated vLLM: weight sync from the trainer, sync cadence, LoRA merging, and bad input.

The tests that start vLLM run in the .venv-vllm lane (``.ci/vllm_lane.sh``); the rest (sync
cadence on a stand-in engine, LoRA merging, one-line errors) run everywhere.
"""

import importlib.util
import os

import lightning as L
import pytest
import torch

from lit_reason.rollout.vllm_engine import VLLMOptions, VLLMSession, build_vllm_session, check_lengths
from lit_reason.rollout.weight_sync import inference_weights
from tests.test_rollout_contract import head32_policy

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here (runs in .venv-vllm: .ci/vllm_lane.sh)")


# ---------------------------------------------------------------- everywhere
class StandInLLM:
    """Records what a session asks of vLLM (no engine started)."""

    def __init__(self):
        self.loads, self.resets = [], 0

    def collective_rpc(self, method, kwargs=None, **_):
        if method == "reload_weights":
            self.loads.append(dict(kwargs["weights_iterator"]))

    def reset_prefix_cache(self):
        self.resets += 1


def test_sync_every_pushes_after_that_many_optimizer_steps():
    model, tok = head32_policy()
    steps = {"n": 0}
    session = VLLMSession(model, tok, VLLMOptions(sync_every=2), 64, optimizer_steps=lambda: steps["n"])
    session.llm = StandInLLM()
    session.sync()  # what start() does after creating the engine
    pushed = []
    for n in range(6):
        steps["n"] = n
        session.prepare()
        pushed.append(len(session.llm.loads))
    assert pushed == [1, 1, 2, 2, 3, 3]  # pushes at steps 2 and 4: at most sync_every - 1 steps stale
    assert session.llm.resets == 3  # every push drops the prefix cache
    first = session.llm.loads[0]
    assert set(first) == {n for n, _ in model.named_parameters()}
    assert all(torch.equal(first[n], p) for n, p in model.named_parameters())


def test_lora_policy_syncs_merged_weights_under_base_names():
    peft = pytest.importorskip("peft")
    model, _ = head32_policy()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    wrapped = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter (peft initialises B to zero)
    synced = dict(inference_weights(wrapped))
    merged = wrapped.merge_and_unload()
    expected = dict(merged.named_parameters())
    assert set(synced) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(synced[name], tensor, atol=1e-6, rtol=0, msg=name)


def test_bad_vllm_settings_are_one_line_before_anything_starts():
    model, tok = head32_policy()
    with pytest.raises(ValueError, match="max_model_len=32 is shorter than max_prompt_length \\+ max_new_tokens = 80"):
        check_lengths(VLLMOptions(max_model_len=32), 64, 16)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="enable_sleep_mode needs a CUDA GPU"):
            build_vllm_session(model, tok, {"enable_sleep_mode": True}, 64, 16)
    with pytest.raises(ValueError, match="unknown key"):
        build_vllm_session(model, tok, {"gpu_memory": 0.5}, 64, 16)
    with pytest.raises(ValueError, match="sync_every must be >= 1"):
        VLLMOptions(sync_every=0)


@pytest.mark.skipif(HAS_VLLM, reason="checks the message shown where vLLM is missing")
def test_missing_vllm_names_the_install():
    from lit_reason.modules import GRPO

    with pytest.raises(ImportError, match="vLLM is not importable.*lit-reason\\[vllm\\]"):
        GRPO(model="tiny", rollout_engine="vllm")


def test_unknown_engine_and_latent_engine_are_refused():
    from lit_reason.modules import GRPO, HRPO

    with pytest.raises(ValueError, match="rollout_engine='sglang'"):
        GRPO(model="tiny", rollout_engine="sglang")
    with pytest.raises(ValueError, match="HRPO samples with its own engine"):
        HRPO(model="tiny", rollout_engine="vllm")


# ---------------------------------------------------------------- in the vLLM lane
@needs_vllm
def test_preset_vllm_cannot_run_on_cpu_is_one_line():
    from lit_reason.modules import GRPO

    if torch.cuda.is_available():
        pytest.skip("the head-size limit is the CPU backend's")
    with pytest.raises(ValueError, match="head_dim=16"):
        GRPO(model="tiny", rollout_engine="vllm")


def vllm_logprobs(llm, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """vLLM's log-probs of a fixed completion after a prompt (prompt log-probs, temperature 1)."""
    from vllm import SamplingParams

    ids = prompt + completion
    out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    rows = out.prompt_logprobs[len(prompt):]
    return torch.tensor([row[t].logprob for row, t in zip(rows, completion)])


def trainer_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


@needs_vllm
@pytest.mark.vllm
def test_weights_follow_the_trainer_after_optimizer_steps(tmp_path):
    """GRPO with vLLM rollouts, k=2 optimizer steps (sync_every=1): the engine is one step behind
    until the next rollout's sync (log-probs of fixed completions differ by > 1e-3), and equal to the
    trainer's within 1e-4 (float32, different kernels) right after it."""
    from datamodules import ToyDataModule
    from lit_reason.modules import GRPO

    model, tok = head32_policy(seed=1)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    L.seed_everything(0)
    module = GRPO(model=str(tmp_path), num_generations=4, max_new_tokens=8, lr=2e-2, prompt_format="plain",
                  max_prompt_length=48, rollout_engine="vllm", rollout_correction={"level": "token", "cap": 2.0},
                  vllm={"kv_cache_gib": 0.25, "max_num_seqs": 16, "sync_every": 1})
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, ToyDataModule(batch_size=2, val_size=0))
    session = module._vllm_session
    try:
        assert trainer.global_step == 2
        assert session.syncs == 2 and session.synced_step == 1  # at start, and before the second rollout
        assert trainer.callback_metrics["rollout_correction/kl_max"] < 1e-3  # in sync when sampled
        prompt, completion = tok("3+4=", add_special_tokens=False)["input_ids"], tok("7 and 8", add_special_tokens=False)["input_ids"]
        policy = module.policy.eval()
        stale = (vllm_logprobs(session.llm, prompt, completion) - trainer_logprobs(policy, prompt, completion)).abs().max()
        assert stale > 1e-3, f"the engine should lag one optimizer step (max |diff| {stale:.2e})"
        session.sync()
        fresh = (vllm_logprobs(session.llm, prompt, completion) - trainer_logprobs(policy, prompt, completion)).abs().max()
        assert fresh < 1e-4, f"after the sync vLLM should score like the trainer (max |diff| {fresh:.2e})"
    finally:
        session.close()


SMOLLM = os.path.expanduser(os.path.join(os.environ.get("LIT_REASON_CACHE", "~/.cache/lit-reason"), "models",
                                         "smollm2-135m-instruct-v1"))


@needs_vllm
@pytest.mark.vllm
@pytest.mark.real_model
@pytest.mark.skipif(not os.path.isdir(SMOLLM), reason="the converted SmolLM2-135M-Instruct is not in the cache (make model)")
def test_real_model_samples_with_the_trainers_logprobs():
    """SmolLM2-135M-Instruct: vLLM's sampler log-probs at T=0.7 match the HF forward."""
    from lit_reason.models.policy import load_policy
    from lit_reason.rollout import SamplingConfig, positions_from_mask
    from lit_reason.rollout.vllm_engine import VLLMRolloutEngine

    loaded = load_policy(SMOLLM)
    model, tok = loaded.model.eval(), loaded.tokenizer
    session = build_vllm_session(model, tok, {"kv_cache_gib": 0.5, "max_num_seqs": 16}, 64, 24)
    try:
        engine = VLLMRolloutEngine(session, tok, SamplingConfig(max_new_tokens=24, temperature=0.7, stop_strings=("\n\n",)))
        enc = tok(["What is 2+3?", "Name a colour."], return_tensors="pt", padding=True)
        ids, mask = enc.input_ids.repeat_interleave(2, 0), enc.attention_mask.repeat_interleave(2, 0)
        r = engine.generate(ids, mask, torch.Generator().manual_seed(0))
        assert session.vllm_stop_strings  # SmolLM2's tokenizer decodes alike in vLLM
        full_ids = torch.cat([r.prompt_ids, r.completion_ids], 1)
        full_mask = torch.cat([r.prompt_mask, r.completion_mask], 1)
        with torch.no_grad():
            logits = model(input_ids=full_ids, attention_mask=full_mask, position_ids=positions_from_mask(full_mask)).logits
        t = r.completion_ids.shape[1]
        expected = torch.log_softmax(logits[:, -t - 1: -1].float() / 0.7, -1).gather(-1, r.completion_ids[..., None])[..., 0]
        real = r.completion_mask.bool()
        assert (r.logprobs[real] - expected[real]).abs().max() < 2e-3
        assert all("\n\n" not in text[:-2] for text in r.texts)
    finally:
        session.close()
