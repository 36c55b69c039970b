"""Export the trained policy of a checkpoint as a Hugging Face model directory.

    lit-reason export --ckpt runs/last.ckpt --out exported/   # then (lit_reason.app.export)
    AutoModelForCausalLM.from_pretrained("exported/"); AutoTokenizer.from_pretrained("exported/")

The module is not rebuilt: the policy is built from the checkpoint's ``model`` hyper-parameter
(a preset, a path or a hub name) and gets the ``policy.*`` weights of the checkpoint's state dict,
so any module of the GRPO family exports the same way (HRPO's gate is not part of a plain causal
LM). A LoRA policy (``model.lora``) exports its adapter (``PeftModel.from_pretrained(base, out)``) and,
with ``--merged``, also the base with the adapter merged in, under ``out/merged`` (a plain
``from_pretrained`` directory). Sharded checkpoints (FSDP / DeepSpeed directories)
must be consolidated first (see docs/scaling.md). At the end of ``fit`` the same thing is done by
``callbacks.PolicyExport``.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch

from lit_reason.models.lora import LoraSettings, merged_model, rebuild_on_cpu
from lit_reason.models.lora_checkpoint import RECORD, check_base
from lit_reason.models.policy import DTYPES, load_policy
from lit_reason.models.tokenizer import build_char_tokenizer

#: Written next to an export of a built-in preset: transformers' AutoTokenizer maps the qwen2 / llama
#: model type to that model's own tokenizer class, which drops the spaces of the character vocabulary.
CHAR_TOKENIZER_NOTE = ("this export uses the built-in character tokenizer: load it with "
                       "transformers.PreTrainedTokenizerFast.from_pretrained(<dir>) (AutoTokenizer maps the model "
                       "type to its own tokenizer class and loses the spaces); lit-reason's model=<dir> does this itself")

POLICY_PREFIX = "policy."
#: subdirectory of a LoRA export that holds the merged model
MERGED_DIR = "merged"


def policy_state_dict(state_dict: dict[str, torch.Tensor], prefix: str = POLICY_PREFIX) -> dict[str, torch.Tensor]:
    """The policy's own weights from a LightningModule state dict (reference copy etc. left out)."""
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        raise ValueError(f"no '{prefix}*' weights in the checkpoint: is it a lit-reason GRPO-family checkpoint?")
    return out


def save_policy(policy: Any, tokenizer: Any, out_dir: str, state_dict: dict[str, torch.Tensor] | None = None,
                dtype: str | None = None) -> str:
    """``save_pretrained`` of ``policy`` (with ``state_dict`` when given, e.g. gathered from shards)
    and its tokenizer into ``out_dir``; ``dtype`` casts the saved weights (e.g. ``bfloat16``)."""
    if state_dict is None:
        state_dict = policy.state_dict()
    if dtype is not None:  # cast the saved copy only: the live (training) policy is left as it is
        if dtype not in DTYPES:
            raise ValueError(f"export dtype {dtype!r} is not one of {sorted(DTYPES)}")
        state_dict = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state_dict.items()}
    os.makedirs(out_dir, exist_ok=True)
    policy.save_pretrained(out_dir, state_dict=state_dict)
    tokenizer.save_pretrained(out_dir)
    if tokenizer.get_vocab() == build_char_tokenizer().get_vocab():
        with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write(f"# Exported by lit-reason\n\nNote: {CHAR_TOKENIZER_NOTE}.\n")
        warnings.warn(f"{out_dir}: {CHAR_TOKENIZER_NOTE}", stacklevel=2)
    if dtype is not None:  # save_pretrained records the live model's dtype; record the saved one
        config_path = os.path.join(out_dir, "config.json")
        with open(config_path) as f:
            config = json.load(f)
        config["dtype"] = str(DTYPES[dtype]).removeprefix("torch.")
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2)
    return out_dir


def save_lora_policy(policy: Any, tokenizer: Any, out_dir: str, state_dict: dict[str, torch.Tensor] | None = None,
                     dtype: str | None = None) -> str:
    """The adapter of a peft ``policy`` (taken from ``state_dict``, the policy's full one, when
    given) and the tokenizer into ``out_dir``; ``dtype`` casts the saved adapter."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"export dtype {dtype!r} is not one of {sorted(DTYPES)}")
    weights = policy.state_dict() if state_dict is None else state_dict
    if dtype is not None:
        weights = {k: v.to(DTYPES[dtype]) if "lora_" in k and v.is_floating_point() else v for k, v in weights.items()}
    os.makedirs(out_dir, exist_ok=True)
    policy.save_pretrained(out_dir, state_dict=weights, save_embedding_layers=False)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def save_merged_policy(model: str, model_dtype: str, lora: LoraSettings, state_dict: dict[str, torch.Tensor],
                       tokenizer: Any, out_dir: str, dtype: str | None = None) -> str:
    """The base with the adapter merged in, rebuilt on CPU from the policy's full ``state_dict``,
    into ``out_dir/merged`` (a plain ``from_pretrained`` directory); returns that directory."""
    return save_policy(merged_model(model, model_dtype, lora, state_dict), tokenizer, os.path.join(out_dir, MERGED_DIR),
                       dtype=dtype)


def export_checkpoint(ckpt_path: str, out_dir: str, dtype: str | None = None, merged: bool = False) -> str:
    """Write the policy of a Lightning checkpoint as a ``from_pretrained``-loadable directory
    (LoRA runs: the adapter, and with ``merged`` the merged model in ``out_dir/merged``)."""
    if os.path.isdir(ckpt_path):
        raise ValueError(f"{ckpt_path} is a directory (a sharded FSDP/DeepSpeed checkpoint): consolidate it into one "
                         "file first, see docs/scaling.md")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters") or {}
    name = hparams.get("model", "tiny")
    weights = policy_state_dict(checkpoint["state_dict"])
    lora = LoraSettings.parse(hparams.get("lora"))
    if lora is not None:
        base = (checkpoint.get("lit_reason") or {}).get(RECORD)  # saved without its base: re-read and checked
        return _export_lora(name, hparams.get("dtype", "float32"), lora, weights, out_dir, dtype, merged, base)
    loaded = load_policy(name, dtype=hparams.get("dtype", "float32"))
    missing, unexpected = loaded.model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k not in _tied_keys(loaded.model)]
    if missing or unexpected:
        raise ValueError(f"checkpoint policy does not match model {name!r}: missing {missing[:3]}, unexpected {unexpected[:3]}"
                         " (was it trained with model.lora? then the checkpoint's hyper-parameters say so)")
    return save_policy(loaded.model, loaded.tokenizer, out_dir, dtype=dtype)


def _export_lora(name: str, model_dtype: str, lora: LoraSettings, weights: dict[str, torch.Tensor], out_dir: str,
                 dtype: str | None, merged: bool, base: dict | None = None) -> str:
    """A LoRA checkpoint: a fresh CPU policy gets its weights; the adapter is saved, then merged.
    ``base``: the record of a checkpoint saved without its base (lit_reason.models.lora_checkpoint)."""
    loaded = rebuild_on_cpu(name, model_dtype, lora, weights, adapter_only=base is not None)
    if base is not None and not lora.load_in_4bit:  # a 4-bit run's fingerprint is of its quantized base
        check_base(base, {POLICY_PREFIX + k: v for k, v in loaded.model.state_dict().items()}, name)
    save_lora_policy(loaded.model, loaded.tokenizer, out_dir, dtype=dtype)
    if merged:
        save_policy(loaded.model.merge_and_unload(), loaded.tokenizer, os.path.join(out_dir, MERGED_DIR), dtype=dtype)
    return out_dir


def _tied_keys(model: Any) -> set[str]:
    return {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
