"""LoRA / QLoRA adapters (peft) for every module of the GRPO family, from one YAML switch.

    model:
      init_args:
        lora: {r: 32, alpha: 64, dropout: 0.0, target_modules: [q_proj, v_proj]}

Only the adapters train (HRPO's gate stays trainable too: it lives outside the policy). The KL
reference is the same network with its adapters switched off (:class:`AdaptersOff`), so ``beta > 0``
costs no second copy of the model. ``load_in_4bit`` stores the frozen base in 4-bit NF4 weights
(bitsandbytes, QLoRA); it needs a CUDA GPU. Export writes the adapter and, on request, the merged
model (:func:`lit_reason.models.export.save_policy`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from lit_reason.utils.config_dataclass import parse_config

PEFT_MISSING = "model.lora needs peft: pip install peft (or pip install 'lit-reason[lora]'), or unset model.lora to train all weights"


@dataclass
class LoraSettings:
    """LoRA hyper-parameters.

    Args:
        r: adapter rank (> 0).
        alpha: scaling numerator (the update is ``alpha / r * B A``); default ``2 * r``.
        dropout: dropout on the adapter input, in [0, 1).
        target_modules: names of the layers to adapt, matched against the last components of the
            module names (``q_proj``, ``mlp.down_proj``); default every linear layer except the
            output head.
        load_in_4bit: QLoRA: load the frozen base in 4-bit NF4 weights (bitsandbytes, CUDA only;
            the model must be a path or hub name, not a random-init preset).
        save_base: also write the frozen base into every checkpoint. By default a pretrained base
            is left out and re-read on resume, checked by a fingerprint (lit_reason.models.lora_checkpoint).
    """

    r: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: list[str] | None = None
    load_in_4bit: bool = False
    save_base: bool = False

    def check(self) -> None:
        """One-line errors for bad values (called by the modules, so the CLI prints just the line)."""
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ValueError(f"model.lora.r must be a positive integer (got {self.r!r}); 8-64 is usual")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"model.lora.alpha must be > 0 (got {self.alpha}); null means 2 * r")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.lora.dropout must be in [0, 1) (got {self.dropout})")
        if self.target_modules is not None and (isinstance(self.target_modules, str) or not self.target_modules):
            raise ValueError(f"model.lora.target_modules must be a non-empty list of layer names (got "
                             f"{self.target_modules!r}); null adapts every linear layer")

    @property
    def scaling_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.r

    @classmethod
    def parse(cls, value: LoraSettings | dict | None) -> LoraSettings | None:
        """``None`` (no LoRA), the settings themselves, or a dict of them (as stored in hparams)."""
        settings = parse_config(cls, value, "model.lora")
        if settings is not None:
            settings.check()
        return settings


def lora_hparams(value: LoraSettings | dict | None) -> dict[str, Any] | None:
    """The settings as a plain dict (what hyper-parameters and checkpoints store)."""
    settings = LoraSettings.parse(value)
    return None if settings is None else asdict(settings)


def require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError as err:
        raise ImportError(PEFT_MISSING) from err


def check_lora_device(settings: LoraSettings) -> None:
    """QLoRA's 4-bit base needs bitsandbytes' CUDA kernels: fail before loading anything else."""
    if not settings.load_in_4bit:
        return
    if not torch.cuda.is_available():
        raise ValueError("model.lora.load_in_4bit (QLoRA) needs a CUDA GPU; on CPU set load_in_4bit: false "
                         "(plain LoRA on a full-precision base)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ImportError("model.lora.load_in_4bit needs bitsandbytes: pip install bitsandbytes") from err


def linear_names(model: nn.Module) -> list[str]:
    """Distinct last-component names of the model's linear layers (candidate LoRA targets)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear) and name})


def check_targets(model: nn.Module, targets: list[str]) -> None:
    """Every target must name some layer of the model (peft's own message is several lines)."""
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        raise ValueError(f"model.lora.target_modules: {missing} match no layer of this model; its linear layers "
                         f"are {linear_names(model)}")


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """``model`` wrapped with fresh adapters (peft ``get_peft_model``): base weights frozen."""
    require_peft()
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules
    if targets is not None:
        check_targets(model, list(targets))
    config = LoraConfig(r=settings.r, lora_alpha=settings.scaling_alpha, lora_dropout=settings.dropout,
                        target_modules=list(targets) if targets is not None else "all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_4bit_base(name_or_path: str, dtype: str, gradient_checkpointing: bool):
    """A pretrained causal LM with NF4 base weights on the local CUDA device, ready for k-bit training."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from lit_reason.models.policy import (
        DTYPES,
        PRESETS,
        LoadedPolicy,
        PolicyLoadError,
        load_tokenizer,
        resolve_model_path,
    )

    path = resolve_model_path(name_or_path)
    if path in PRESETS:
        raise ValueError(f"model.lora.load_in_4bit loads pretrained weights: model={name_or_path!r} is a random-init "
                         "preset; use a path or hub name, or set load_in_4bit: false")
    compute = DTYPES[dtype] if DTYPES[dtype] != torch.float32 else torch.bfloat16
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    tokenizer = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, dtype=compute,
                                                     device_map={"": device})
    except (OSError, ValueError) as err:
        raise PolicyLoadError(f"could not load {name_or_path!r} in 4-bit: {' '.join(str(err).split())}") from err
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    return LoadedPolicy(model, tokenizer, name_or_path)


def load_lora_policy(name_or_path: str, dtype: str, gradient_checkpointing: bool, settings: LoraSettings):
    """``load_policy`` (or its 4-bit variant) with adapters applied: a ``LoadedPolicy`` whose model is a peft model."""
    from lit_reason.models.policy import load_policy

    require_peft()
    check_lora_device(settings)
    if settings.load_in_4bit:
        loaded = load_4bit_base(name_or_path, dtype, gradient_checkpointing)
    else:
        loaded = load_policy(name_or_path, dtype=dtype, gradient_checkpointing=gradient_checkpointing)
    loaded.model = apply_lora(loaded.model, settings)
    return loaded


def is_lora_policy(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class AdaptersOff:
    """The frozen base inside a peft policy, called with its adapters switched off (and in eval
    mode): the KL reference of a LoRA run, sharing every weight with the policy. Not an
    ``nn.Module``, so nothing is registered twice in the state dict."""

    def __init__(self, policy: nn.Module) -> None:
        self.policy = policy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return self.policy(*args, **kwargs)
        finally:
            self.policy.train(was_training)


def adapter_state_dict(policy: nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter weights only (peft's naming), from ``state_dict`` (the policy's full one) or the live policy."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(policy, state_dict=state_dict)


def rebuild_on_cpu(name_or_path: str, dtype: str, settings: LoraSettings, state_dict: dict[str, torch.Tensor],
                   adapter_only: bool = False):
    """A fresh full-precision peft policy on CPU holding the trained weights of ``state_dict`` (the
    policy's full state dict). A QLoRA run's 4-bit base weights are not reused: its pretrained
    base is read again in ``dtype`` and only the adapter is copied, as for ``adapter_only`` (a
    checkpoint saved without its base, lit_reason.models.lora_checkpoint)."""
    from peft import set_peft_model_state_dict

    loaded = load_lora_policy(name_or_path, dtype, False, replace(settings, load_in_4bit=False))
    if settings.load_in_4bit or adapter_only:
        result = set_peft_model_state_dict(loaded.model, adapter_state_dict(loaded.model, state_dict))
        bad = list(result.unexpected_keys)
    else:
        result = loaded.model.load_state_dict(state_dict, strict=False)
        bad = list(result.missing_keys) + list(result.unexpected_keys)
    if bad:
        raise ValueError(f"LoRA weights do not match model {name_or_path!r} with model.lora={asdict(settings)}: {bad[:3]}")
    return loaded


def merged_model(name_or_path: str, dtype: str, settings: LoraSettings, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A plain causal LM on CPU: the base with the trained adapter merged into its weights."""
    return rebuild_on_cpu(name_or_path, dtype, settings, state_dict).model.merge_and_unload()


def check_lora_precision(settings: LoraSettings, has_reference: bool, plugin: Any) -> None:
    """LoRA under the FP4 plugin: the plugin's FP4 linears wrap the base layers, so the reference
    (the same base, adapters off) is FP4 too; say so before training when the plugin was asked
    for a high-precision reference, or when QLoRA's 4-bit base would be quantized twice."""
    from lit_reason.precision import FP4Precision

    if not isinstance(plugin, FP4Precision):
        return
    if settings.load_in_4bit:
        raise ValueError("FP4Precision and model.lora.load_in_4bit both quantize the base weights: choose one")
    if has_reference and not getattr(plugin, "quantize_reference", True):
        raise ValueError("FP4Precision with model.lora and beta > 0: the KL reference is the policy's own base with the "
                         "adapters off, so it runs in FP4 too; set the plugin's quantize_reference: true (or beta: 0)")
