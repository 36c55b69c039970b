"""What only a real pretrained model exposes, tested on the built-in SmolLM2-135M-Instruct.

BPE tokenizer, chat template, ``<|im_end|>`` as both EOS and pad, tied embeddings. ``make setup``
installs and converts the model; without it these tests fail with the one-line install command.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from datamodules import MathDataModule
from lit_reason.algorithms import objectives as obj
from lit_reason.app.cli import main
from lit_reason.models.export import export_checkpoint
from lit_reason.algorithms.hybrid import latent_from_logits
from lit_reason.rollout.latent import LATENTS, MIX
from lit_reason.modules import GRPO, HRPO, NTHR
from lit_reason.models.policy import load_policy
from lit_reason.tasks.prompts import render_prompt
from lit_reason.rollout import RolloutEngine, SamplingConfig, positions_from_mask
from tests.test_configs import FAST

pytestmark = pytest.mark.real_model

NAME = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def small(cls=GRPO, **overrides):
    settings = dict(model=NAME, prompt_format="chat", num_generations=2, max_new_tokens=8, temperature=1.0,
                    sampling_seed=0, max_prompt_length=128)
    return cls(**{**settings, **overrides})


@pytest.fixture(scope="module")
def grpo():
    torch.manual_seed(0)
    return small()


def test_completions_stop_at_im_end_and_the_mask_keeps_the_first_eos_only(grpo):
    tok = grpo.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id == eos == tok.pad_token_id  # pad IS eos here: masks must not be built from ids
    ids, mask = grpo.encode_prompts([QUESTION])
    engine = RolloutEngine(grpo.policy, tok, SamplingConfig(max_new_tokens=24, temperature=0.0))
    greedy = engine.generate(ids, mask)
    assert "Paris" in greedy.texts[0] and not greedy.truncated[0]
    sampled = grpo.generate([type("P", (), {"prompt": QUESTION})()] * 2, repeats=4, generator=torch.Generator().manual_seed(0))
    for rollout in (greedy, sampled):
        for row, m, cut in zip(rollout.completion_ids, rollout.completion_mask, rollout.truncated):
            n = int(m.sum())
            assert m[:n].all() and not m[n:].any()  # one block from the start
            kept = row[:n].tolist()
            if cut:
                assert eos not in kept
            else:
                assert kept[-1] == eos and eos not in kept[:-1]  # the first EOS is in, nothing after it
            assert (row[n:] == tok.pad_token_id).all()
    assert not any("<|im_end|>" in t for t in greedy.texts)


def test_the_generation_prompt_is_used_once_with_one_bos(grpo):
    tok = grpo.tokenizer
    start, bos = tok.convert_tokens_to_ids("<|im_start|>"), tok.bos_token_id
    for prompt in (QUESTION, "What is 2 + 3?", [{"role": "system", "content": "Be brief."}, *QUESTION]):
        ids = grpo.encode_prompt(prompt)
        text = tok.decode(ids)
        assert ids[0] == start and ids[1] != start and ids.count(bos) == text.count("<|im_start|>")
        assert text.endswith("<|im_start|>assistant\n") and text.count("<|im_start|>assistant") == 1
        assert text.count("<|im_start|>system") == 1  # the template's default system prompt, or ours, once
    # a chat DataModule's prompt goes through the template exactly once too
    dm = MathDataModule(source="synthetic", prompt_format="chat", num_train=4, num_val=4, batch_size=2)
    dm.setup("fit")
    text = tok.decode(grpo.encode_prompt(dm.synthetic_problem(0).prompt))
    assert text.count("<|im_start|>") == 3 and text.count("<|im_start|>assistant\n") == 1


def test_a_long_prompt_loses_the_start_of_its_user_text_never_the_template(grpo):
    tok = grpo.tokenizer
    question = " ".join(str(i) for i in range(300)) + " What is the last number?"
    full = grpo.encode_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
                              max_length=10_000)
    limit = 64
    cut = grpo.encode_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
                             max_length=limit)
    assert len(full) > limit and len(cut) <= limit
    head = tok("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    tail = tok("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert cut[: len(head)] == head and cut[-len(tail):] == tail
    kept = tok.decode(cut[len(head): -len(tail)])
    assert kept.endswith("299 What is the last number?") and question.endswith(kept.lstrip())
    with pytest.raises(ValueError, match="template alone"):
        grpo.encode_prompt(QUESTION, max_length=8)
    strict = render_prompt(tok, QUESTION, "chat")[0]
    assert tok.decode(grpo.encode_prompt(QUESTION)) == strict  # a short prompt is untouched


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_logprobs_equal_the_training_forward(grpo, temperature):
    """Left padding (prompts of different lengths), KV cache and compaction of finished rows must
    give the same per-token log-probs as one full forward over prompt + completion."""
    grpo.hparams.temperature = temperature
    engine = RolloutEngine(grpo.policy, grpo.tokenizer, SamplingConfig(max_new_tokens=16, temperature=temperature))
    prompts = [QUESTION, [{"role": "user", "content": "Write a long sentence about the sea, the wind and the sky."}]]
    ids, mask = grpo.encode_prompts(prompts)
    assert (mask == 0).any()  # the shorter prompt is left-padded
    rollout = engine.generate(ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0), torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = grpo.policy_logits(grpo.policy, rollout)
        logps = obj.token_logps(logits, rollout.completion_ids)
    m = rollout.completion_mask.bool()
    assert m.sum() > 20
    assert torch.allclose(logps[m], rollout.logprobs[m], atol=1e-4, rtol=0)
    grpo.hparams.temperature = 1.0


def test_decode_round_trips_spaces_newlines_and_unicode(grpo):
    tok = grpo.tokenizer
    engine = RolloutEngine(grpo.policy, tok, SamplingConfig(max_new_tokens=64))
    texts = ["  two  spaces , then . a dot", "line one\n\n\tline two\n", "héllo wörld, 你好, 🙂, naïve café", "<answer>42</answer>"]
    width = 64
    rows = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    prompt = torch.ones(len(rows), 1, dtype=torch.long)
    rollout = engine.assemble(prompt, prompt, ids, mask, torch.zeros(len(rows), width), torch.ones(len(rows), dtype=torch.bool),
                              width, 0.0, {})
    assert rollout.texts == texts


def test_the_final_hidden_states_are_the_normed_ones_the_lm_head_reads(grpo):
    """NTHR's influence scores use the hidden states that produced the logits (after the final norm)."""
    ids, mask = grpo.encode_prompts([QUESTION])
    rollout = RolloutEngine(grpo.policy, grpo.tokenizer, SamplingConfig(max_new_tokens=6, temperature=0.0)).generate(ids, mask)
    with torch.no_grad():
        logits, hidden = grpo.policy_logits(grpo.policy, rollout, need_hidden=True)
        head = grpo.policy.get_output_embeddings().weight
        assert torch.allclose(hidden @ head.T, logits, atol=1e-4)
        full_ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], 1)
        full_mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], 1)
        out = grpo.policy.model(input_ids=full_ids, attention_mask=full_mask, position_ids=positions_from_mask(full_mask),
                                output_hidden_states=True)
        t = rollout.completion_ids.shape[1]
        pre_norm = out.hidden_states[-2][:, -t - 1: -1]  # the last decoder layer's input, unnormed
        assert not torch.allclose(pre_norm, hidden, atol=1e-2)
    nthr = small(NTHR)
    nthr.policy = grpo.policy
    old = nthr.old_policy_pass(rollout, need_old=False, need_ref=False)
    assert torch.allclose(old["nthr_hidden"], hidden, atol=1e-5)


def test_hrpo_latents_come_from_the_real_embedding_table():
    torch.manual_seed(0)
    hrpo = small(HRPO, delimiter="<answer>", max_new_tokens=10)
    table = hrpo.policy.model.embed_tokens.weight
    pretrained = load_policy(NAME).model.model.embed_tokens.weight
    assert torch.equal(table, pretrained) and table.data_ptr() == hrpo.policy.lm_head.weight.data_ptr()
    problem = type("P", (), {"prompt": QUESTION})()
    rollout = hrpo.generate([problem], generator=torch.Generator().manual_seed(0))
    mix = rollout.extras[MIX]
    assert mix.sum() > 4
    with torch.no_grad():
        logits, _ = hrpo.policy_logits(hrpo.policy, rollout)  # rebuilt from the stored latents: the sampler's logits
    expected = latent_from_logits(logits, table, hrpo.hparams.tau)
    assert torch.allclose(rollout.extras[LATENTS][mix], expected[mix], atol=1e-4, rtol=1e-4)


def length_reward(problem, completion, score):
    """A reward that differs within every group, so one step surely moves the weights."""
    return len(completion) / 100


def test_export_reloads_with_identical_logits(tmp_path):
    torch.manual_seed(0)
    module = small(lr=1e-3, max_new_tokens=8, num_generations=4, temperature=1.5, rewards={"tests.test_real_model:length_reward": 1.0})
    ids = module.tokenizer("<|im_start|>user\nHi there<|im_end|>\n", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = module.policy(ids).logits
    data = MathDataModule(source="synthetic", prompt_format="chat", num_train=8, num_val=0, batch_size=1)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(tmp_path / "last.ckpt", weights_only=True)
    out = export_checkpoint(str(tmp_path / "last.ckpt"), str(tmp_path / "exported"))
    reloaded = load_policy(out)
    module.policy.eval()
    with torch.no_grad():
        trained, again = module.policy(ids).logits, reloaded.model(ids).logits
    assert torch.equal(trained, again)
    assert not torch.allclose(trained, base, atol=1e-3)  # the step changed the weights, and export kept them
    assert reloaded.tokenizer.chat_template == module.tokenizer.chat_template
    assert reloaded.tokenizer.eos_token == "<|im_end|>"


REAL_CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "smollm2").glob("*.yaml"))
#: small settings: 1 prompt x G 2 completions of 8 tokens, 1 step, one 2-item validation batch
SMALL_RL = ["--model.init_args.num_generations=2", "--model.init_args.max_new_tokens=8"]
SMALL_EVAL = ["--model.init_args.val_max_new_tokens=8", "--data.init_args.val_batch_size=2", "--trainer.num_sanity_val_steps=1"]


#: variants of a method config that would repeat its run here (grpo_lora: ~30 s more on 2 busy cores; it
#: parses in tests/test_configs.py and LoRA itself is tested on the tiny preset in tests/test_lora.py;
#: grpo_vllm needs vLLM, whose own venv runs it: tests/test_vllm_engine.py in .ci/vllm_lane.sh)
VARIANTS = {"grpo_lora", "grpo_vllm"}


@pytest.mark.parametrize("path", [p for p in REAL_CONFIGS if p.stem not in VARIANTS], ids=lambda p: p.stem)
def test_every_method_trains_on_the_real_model_from_yaml(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sft = "class_path: SFT" in path.read_text()
    small_settings = ["--data.init_args.batch_size=2"] if sft else ["--data.init_args.batch_size=1", *SMALL_RL]
    main(["fit", "--config", str(path), *FAST, "--trainer.max_steps=1", *small_settings, *SMALL_EVAL,
          f"--trainer.default_root_dir={tmp_path}"])
    if sft:  # the warm-up's export is a loadable model directory
        assert load_policy(str(tmp_path / "runs" / "smollm2" / "sft_policy")).tokenizer.eos_token == "<|im_end|>"


def test_the_method_configs_cover_every_method():
    classes = {yaml.safe_load(p.read_text())["model"]["class_path"] for p in REAL_CONFIGS}
    plugins = [p for p in REAL_CONFIGS if "FP4Precision" in p.read_text()]
    assert {"GRPO", "SFT", "Intuitor", "NTHR", "HRPO"} <= classes and plugins
    for p in REAL_CONFIGS:
        init = yaml.safe_load(p.read_text())["model"]["init_args"]
        assert init["model"] == NAME and init["prompt_format"] == "chat"
