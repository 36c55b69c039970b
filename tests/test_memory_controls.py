"""Memory knobs change memory, not the update: gradient checkpointing, training micro-batches and
chunked log-probs must give the same parameters after training as the plain configuration."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from datamodules.toy import ToyDataModule
from lit_reason.algorithms import objectives as obj
from lit_reason.modules import GRPO

# SGD: Adam divides by sqrt(v), which turns float32 rounding in near-zero gradients into visible steps
BASE = dict(model="tiny", num_generations=4, max_new_tokens=8, lr=0.5, optimizer="sgd", beta=0.05, entropy_coef=0.01)


def train(steps: int = 2, **knobs) -> GRPO:
    L.seed_everything(0)
    module = GRPO(**{**BASE, **knobs})
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=ToyDataModule(batch_size=2, val_size=0))
    return module


@pytest.fixture(scope="module")
def baseline() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in train().policy.state_dict().items()}


@pytest.mark.parametrize("knobs", [
    {"gradient_checkpointing": True},
    {"micro_batch_size": 2},  # rollout batch 2 prompts x 4 = 8 rows, trained 2 rows at a time
    {"logprob_chunk_size": 3},  # 3 positions per float32 block (not a divisor of the length)
    {"gradient_checkpointing": True, "micro_batch_size": 4, "logprob_chunk_size": 5},
], ids=["checkpointing", "micro-batch", "chunked-logps", "all-three"])
def test_memory_knobs_leave_the_update_unchanged(baseline, knobs):
    module = train(**knobs)
    init = GRPO(**BASE).policy.state_dict()
    moved = [k for k in baseline if not torch.equal(baseline[k], init[k])]
    assert moved, "the baseline did not train"
    for name, value in module.policy.state_dict().items():
        torch.testing.assert_close(value, baseline[name], rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")


def saved_activation_bytes(module: GRPO) -> int:
    """Bytes autograd keeps for backward in one training forward of the policy."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    ids = torch.randint(4, 100, (4, 48))
    module.policy.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module.policy(ids, use_cache=False).logits.sum().backward()
    return sum(saved)


def test_gradient_checkpointing_keeps_fewer_activations():
    torch.manual_seed(0)
    plain = saved_activation_bytes(GRPO(**BASE))
    torch.manual_seed(0)
    checkpointed = saved_activation_bytes(GRPO(**{**BASE, "gradient_checkpointing": True}))
    assert checkpointed < 0.5 * plain, (checkpointed, plain)


def test_chunked_token_logps_match_and_never_hold_a_full_float32_copy():
    torch.manual_seed(0)
    logits = torch.randn(3, 40, 97, dtype=torch.bfloat16)
    ids = torch.randint(0, 97, (3, 40))
    full = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None]).squeeze(-1)
    biggest = []
    real_float = torch.Tensor.float

    def spy(t):
        out = real_float(t)
        biggest.append(out.numel())
        return out

    torch.Tensor.float = spy
    try:
        chunked = obj.token_logps(logits, ids, chunk_size=16)
    finally:
        torch.Tensor.float = real_float
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-5)
    assert max(biggest) == 16 * 97  # one chunk of 16 positions, never all 120
