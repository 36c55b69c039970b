"""Export the trained policy of a checkpoint as a Hugging Face model directory.

    python -m lit_reason.export --ckpt runs/last.ckpt --out exported/   # then
    AutoModelForCausalLM.from_pretrained("exported/"); AutoTokenizer.from_pretrained("exported/")

The module is not rebuilt: the policy is built from the checkpoint's ``model`` hyper-parameter
(a preset, a path or a hub name) and gets the ``policy.*`` weights of the checkpoint's state dict,
so any module of the GRPO family exports the same way (HRPO's gate and LoRA adapters are not part
of a plain causal LM: merge adapters first). Sharded checkpoints (FSDP / DeepSpeed directories)
must be consolidated first (see docs/scaling.md). At the end of ``fit`` the same thing is done by
``callbacks.PolicyExport``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch

from lit_reason.policy import DTYPES, load_policy

POLICY_PREFIX = "policy."


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
    if dtype is not None:  # save_pretrained records the live model's dtype; record the saved one
        config_path = os.path.join(out_dir, "config.json")
        with open(config_path) as f:
            config = json.load(f)
        config["dtype"] = str(DTYPES[dtype]).removeprefix("torch.")
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2)
    return out_dir


def export_checkpoint(ckpt_path: str, out_dir: str, dtype: str | None = None) -> str:
    """Write the policy of a Lightning checkpoint as a ``from_pretrained``-loadable directory."""
    if os.path.isdir(ckpt_path):
        raise ValueError(f"{ckpt_path} is a directory (a sharded FSDP/DeepSpeed checkpoint): consolidate it into one "
                         "file first, see docs/scaling.md")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters") or {}
    name = hparams.get("model", "tiny")
    loaded = load_policy(name, dtype=hparams.get("dtype", "float32"))
    weights = policy_state_dict(checkpoint["state_dict"])
    missing, unexpected = loaded.model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k not in _tied_keys(loaded.model)]
    if missing or unexpected:
        raise ValueError(f"checkpoint policy does not match model {name!r}: missing {missing[:3]}, unexpected {unexpected[:3]}"
                         " (LoRA/HRPO policies: merge adapters before exporting)")
    return save_policy(loaded.model, loaded.tokenizer, out_dir, dtype=dtype)


def _tied_keys(model: Any) -> set[str]:
    return {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-reason export", description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="a Lightning .ckpt written by lit-reason fit")
    parser.add_argument("--out", required=True, help="output directory (config, weights, tokenizer)")
    parser.add_argument("--dtype", default=None, help="cast the saved weights: float32 | bfloat16 | float16")
    args = parser.parse_args(argv)
    try:
        print(export_checkpoint(args.ckpt, args.out, args.dtype))
    except (ValueError, FileNotFoundError) as err:
        message = " ".join(str(err).split())  # one line, as the CLI prints bad input (lit_reason/cli_errors.py)
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
