"""The frozen reference model of the KL term, optionally in 8-bit or 4-bit (NF4) weights.

The reference only runs no-grad forwards, so its weights can be stored quantized with
bitsandbytes: ``8bit`` (LLM.int8 row-wise absmax, about 1/2 of bf16 weight memory, 1/4 of fp32)
or ``nf4`` (4-bit NormalFloat in blocks of 64, about 1/4 of bf16). Every ``nn.Linear`` except the
output head is replaced; embeddings, norms and ``lm_head`` stay in the policy dtype (the head sets
the log-probs the KL compares, and small models keep most of their weights there).

Quantization happens when the module is moved to its device (bitsandbytes quantizes on
``.to(device)``): Lightning does that at fit start, so on a GPU the full-precision copy never
reaches GPU memory. Both modes run on CPU with bitsandbytes >= 0.49 (slow kernels, fine for tests).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

REF_QUANTIZATIONS = ("8bit", "nf4")
#: Linear layers kept in full precision (matched against the last component of the module name).
KEEP_FULL_PRECISION = ("lm_head",)


def check_ref_quantization(mode: str | None) -> None:
    if mode is not None and mode not in REF_QUANTIZATIONS:
        raise ValueError(f"model.ref_quantization={mode!r}: choose null, '8bit' or 'nf4'")
    if mode is not None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise ImportError(f"model.ref_quantization={mode!r} needs bitsandbytes: pip install bitsandbytes") from err


def quantized_linear(linear: nn.Linear, mode: str, compute_dtype: torch.dtype) -> nn.Module:
    """A bitsandbytes layer holding ``linear``'s weights, quantized at its next ``.to(device)``."""
    import bitsandbytes as bnb

    weight = linear.weight.data.detach().clone()
    if mode == "8bit":
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                    has_fp16_weights=False, threshold=0.0, device="meta")
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                  compute_dtype=compute_dtype, quant_type="nf4", device="meta")
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.data.detach().clone(), requires_grad=False)
    return layer


def quantizable_linears(model: nn.Module, keep: tuple[str, ...] = KEEP_FULL_PRECISION) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear and name.rsplit(".", 1)[-1] not in keep]


def build_reference(policy: nn.Module, quantization: str | None = None, device: torch.device | str | None = None,
                    keep: tuple[str, ...] = KEEP_FULL_PRECISION) -> nn.Module:
    """A frozen copy of ``policy`` (eval mode, no grads), its Linear layers quantized when asked.

    The quantized layers are built one at a time from the policy's weights (the copy never holds a
    second full-precision set). ``device``: where to quantize now (default: CPU when no GPU is
    present, else wait for Lightning's move to the GPU so the full-precision weights never land there).
    """
    check_ref_quantization(quantization)
    targets = quantizable_linears(policy, keep) if quantization is not None else []
    # deepcopy with the targeted weights mapped to empty placeholders: they are replaced below
    memo = {id(linear.weight): nn.Parameter(torch.empty(0), requires_grad=False) for _, linear in targets}
    ref = copy.deepcopy(policy, memo)
    if hasattr(ref, "gradient_checkpointing_disable"):
        ref.gradient_checkpointing_disable()
    dtype = next(policy.parameters()).dtype
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = ref.get_submodule(parent_name) if parent_name else ref
        layer = quantized_linear(linear, quantization, compute_dtype=dtype)
        if device is None and not torch.cuda.is_available():
            layer.to("cpu")  # quantize now, so only one full-precision layer exists at a time
        elif device is not None:
            layer.to(device)
        setattr(parent, child, layer)
    ref.requires_grad_(False).eval()
    if device is not None:
        ref.to(device)
    return ref


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers (quantized weights count at their stored size)."""
    tensors = list(model.parameters()) + list(model.buffers())
    total = sum(t.numel() * t.element_size() for t in tensors)
    for p in model.parameters():  # quantization statistics live beside the weights
        for attr in ("SCB",):
            stat = getattr(p, attr, None)
            if isinstance(stat, torch.Tensor):
                total += stat.numel() * stat.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    return total
