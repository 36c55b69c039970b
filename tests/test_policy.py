"""Policy loading: presets, local directories, chat template, pad token, clear failures."""

import pytest
import torch

from lit_reason.models.policy import PolicyLoadError, load_policy, load_tokenizer


def test_presets_build_offline_with_chat_template():
    for name in ("tiny", "tiny-llama"):
        p = load_policy(name)
        assert p.model.config.vocab_size == len(p.tokenizer)
        text = p.tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
        assert text.endswith("<|im_start|>assistant\n")
    assert load_policy("tiny-llama").model.config.model_type == "llama"


def test_answer_tags_are_single_tokens():
    tok = load_tokenizer("tiny")
    assert len(tok("<answer>", add_special_tokens=False)["input_ids"]) == 1
    assert tok.decode(tok("x <answer>12</answer>", add_special_tokens=False)["input_ids"]) == "x <answer>12</answer>"


def test_local_directory_round_trip(tmp_path):
    p = load_policy("tiny")
    p.model.save_pretrained(tmp_path)
    p.tokenizer.save_pretrained(tmp_path)
    q = load_policy(str(tmp_path), dtype="bfloat16", gradient_checkpointing=True)
    assert q.model.dtype == torch.bfloat16 and q.model.is_gradient_checkpointing
    for a, b in zip(p.model.state_dict().values(), q.model.state_dict().values()):
        torch.testing.assert_close(a.bfloat16(), b)
    text = "a b  <answer>1 2</answer>\n"  # spaces and tags survive the reload
    assert q.tokenizer(text, add_special_tokens=False)["input_ids"] == p.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert q.tokenizer.decode(q.tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_tokenizer_without_pad_uses_eos_and_without_both_fails(tmp_path):
    p = load_policy("tiny")
    tok = p.tokenizer
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "nopad")
    assert load_tokenizer(str(tmp_path / "nopad")).pad_token == tok.eos_token
    tok.eos_token = None
    tok.save_pretrained(tmp_path / "none")
    with pytest.raises(PolicyLoadError, match="neither a pad nor an eos token"):
        load_tokenizer(str(tmp_path / "none"))


def test_missing_model_fails_with_one_line_naming_the_fix(tmp_path):
    with pytest.raises(PolicyLoadError) as err:
        load_policy(str(tmp_path / "no-such-model"))
    message = str(err.value)
    assert "\n" not in message and "save_pretrained" in message and "tiny" in message
    with pytest.raises(PolicyLoadError, match="dtype"):
        load_policy("tiny", dtype="float8")
