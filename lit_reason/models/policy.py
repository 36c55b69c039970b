"""Policy loading: any Hugging Face causal LM by name or path, or a built-in offline preset.

Presets are random-init configs paired with the project's own character tokenizer, so every
config and test runs with no hub access. Failures to find a model end in one line naming the fix.
"""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import urlparse
from dataclasses import dataclass

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PretrainedConfig, PreTrainedModel,
                          PreTrainedTokenizerFast, Qwen2Config)

from lit_reason.models.pretrained import BUILTIN_MODELS, BuiltinModelError, builtin_model_path
from lit_reason.models.tokenizer import build_char_tokenizer

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class PolicyLoadError(ValueError):
    """A model or tokenizer could not be loaded; the message names the fix."""


def _qwen2(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, tie: bool = True) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        tie_word_embeddings=tie, rope_theta=10000.0,
    )


def _llama(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, tie: bool = True) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        tie_word_embeddings=tie,
    )


#: name -> function(vocab_size) -> config. Random init; the tokenizer is the character tokenizer.
PRESETS = {
    "tiny": lambda v: _qwen2(v, hidden=64, layers=2, heads=4, kv_heads=2, ffn=192),
    "tiny-llama": lambda v: _llama(v, hidden=64, layers=2, heads=4, kv_heads=2, ffn=192),
    "small": lambda v: _qwen2(v, hidden=256, layers=4, heads=8, kv_heads=4, ffn=768),
    # ~100M parameters (Llama-shaped), for memory/speed benchmarks.
    "llama-100m": lambda v: _llama(32000, hidden=768, layers=12, heads=12, kv_heads=12, ffn=2048, tie=False),
    # The shape of Qwen2-0.5B (random init), for GPU benchmarks.
    "qwen2-0.5b-shape": lambda v: _qwen2(151936, hidden=896, layers=24, heads=14, kv_heads=2, ffn=4864),
}


@dataclass
class LoadedPolicy:
    model: PreTrainedModel
    tokenizer: object
    name: str


def preset_config(name: str) -> PretrainedConfig:
    tokenizer_size = len(build_char_tokenizer())
    return PRESETS[name](tokenizer_size)


def resolve_model_path(name_or_path: str) -> str:
    """A built-in pretrained name becomes its converted local directory; anything else is as given
    (a hub name that is neither cached nor reachable fails now, not after a minute of retries)."""
    if name_or_path in BUILTIN_MODELS:
        try:
            return builtin_model_path(name_or_path)
        except BuiltinModelError as err:
            raise PolicyLoadError(str(err)) from err
    if name_or_path not in PRESETS and not os.path.exists(name_or_path) and not _hub_name_usable(name_or_path):
        import difflib

        close = difflib.get_close_matches(name_or_path, [*PRESETS, *BUILTIN_MODELS], n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PolicyLoadError(f"{_not_found_message(name_or_path, 'model')} ({hint}the hub is unreachable and "
                              "nothing of that name is cached)")
    return name_or_path


def _hub_name_usable(name: str, timeout_s: float = 3.0) -> bool:
    """Whether a hub name can load: its config is in the local cache, or the hub answers."""
    try:
        from huggingface_hub import constants, try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return True
        if constants.HF_HUB_OFFLINE:
            return False
        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except Exception:  # noqa: BLE001 - not a valid repo id, an old huggingface_hub: let transformers decide
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """The tokenizer for a preset or an HF name/path, with padding on the left and a pad token."""
    name_or_path = resolve_model_path(name_or_path)
    if name_or_path in PRESETS:
        tokenizer = build_char_tokenizer()
    else:
        # A saved character tokenizer declares the generic fast class; AutoTokenizer would map a
        # qwen2 / llama config to that model's own tokenizer class, which drops the spaces.
        loader = PreTrainedTokenizerFast if _declares_generic_tokenizer(name_or_path) else AutoTokenizer
        try:
            tokenizer = loader.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise PolicyLoadError(_not_found_message(name_or_path, "tokenizer")) from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise PolicyLoadError(
                f"tokenizer of {name_or_path!r} has neither a pad nor an eos token: save one with "
                "tokenizer.add_special_tokens({'pad_token': '<pad>'}) and point model= at that directory"
            )
        tokenizer.pad_token = tokenizer.eos_token  # the usual choice for causal LMs; masks keep it out of the loss
    return tokenizer


def _declares_generic_tokenizer(path: str) -> bool:
    """Whether a local directory's tokenizer_config.json names the generic fast tokenizer class."""
    config = os.path.join(path, "tokenizer_config.json")
    try:
        with open(config, encoding="utf-8") as handle:
            declared = json.load(handle).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return False
    return declared in ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_policy(
    name_or_path: str = "tiny",
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedPolicy:
    """Load ``(model, tokenizer)``: a preset name, a local directory, or a hub name.

    Args:
        name_or_path: a random-init preset (``tiny``, ``tiny-llama``, ``small``, ``llama-100m``,
            ``qwen2-0.5b-shape``), a built-in pretrained model (``smollm2-135m-instruct``, offline
            from its registry package), a directory written by ``save_pretrained``, or a hub name
            (needs network or a local cache).
        dtype: ``float32`` | ``bfloat16`` | ``float16``.
        gradient_checkpointing: recompute activations in backward (less memory, more compute).
        attn_implementation: e.g. ``sdpa`` or ``eager``; None lets transformers choose.
    """
    if dtype not in DTYPES:
        raise PolicyLoadError(f"model dtype {dtype!r} is not one of {sorted(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    name, name_or_path = name_or_path, resolve_model_path(name_or_path)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if name_or_path in PRESETS:
        config = preset_config(name_or_path)
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, **kwargs)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                name_or_path, dtype=torch_dtype, trust_remote_code=trust_remote_code, **kwargs
            )
        except (OSError, ValueError) as err:
            raise PolicyLoadError(_not_found_message(name_or_path, "model")) from err
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return LoadedPolicy(model, tokenizer, name)


def _not_found_message(name: str, what: str) -> str:
    where = "a local directory that exists but has no loadable files" if os.path.isdir(name) else "not a local directory"
    return (
        f"could not load {what} {name!r}: not a built-in name ({', '.join([*PRESETS, *BUILTIN_MODELS])}), {where}, and the hub "
        "is unreachable or has no such repo; pass model=<preset> or model=<path saved with save_pretrained>"
    )
