"""The step-time changes (docs/step_time.md) do less work but give the same results: the entropy
helper against a float64 brute force and the old formula, its mask against the unmasked values,
the GRPO update unchanged, and the KV-cache argument picked once without changing a sample."""

import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from datamodules import ToyDataModule
from lit_reason.algorithms import objectives as obj
from lit_reason.modules import GRPO
from lit_reason.rollout import RolloutEngine, SamplingConfig, cache_argument, output_cache


def brute_entropy(logits: torch.Tensor) -> torch.Tensor:
    """-sum p log p per position, in float64, one position at a time."""
    flat = logits.detach().double().reshape(-1, logits.shape[-1])
    out = []
    for row in flat:
        p = torch.softmax(row, -1)
        out.append(float(-(p * torch.log(p)).sum()))
    return torch.tensor(out, dtype=torch.float64).reshape(logits.shape[:-1])


def old_token_entropy(logits: torch.Tensor, chunk_size: int = 1024, mask=None) -> torch.Tensor:
    """The formula before the change: log_softmax, exp, product, sum over every position."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def test_entropy_matches_float64_brute_force_flat_peaked_and_sliced():
    torch.manual_seed(0)
    full = torch.randn(3, 7, 50) * torch.tensor([0.1, 3.0, 40.0])[:, None, None]  # near-uniform .. one-hot
    full[1, 2] = 0.0  # exactly uniform: log V
    sliced = full[:, :-1]  # the training forward's non-contiguous logits[:, :-1]
    assert not sliced.is_contiguous()
    for chunk in (1, 4, 1024):
        got = obj.token_entropy(sliced, chunk_size=chunk)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), brute_entropy(sliced), rtol=0, atol=2e-6)
    assert obj.token_entropy(sliced)[1, 2].item() == pytest.approx(torch.log(torch.tensor(50.0)).item(), abs=1e-6)
    torch.testing.assert_close(obj.token_entropy(sliced), old_token_entropy(sliced), rtol=1e-5, atol=1e-5)
    # bfloat16 logits are upcast per chunk, like token_logps
    torch.testing.assert_close(obj.token_entropy(sliced.bfloat16()).double(), brute_entropy(sliced.bfloat16()),
                               rtol=0, atol=2e-6)


def test_entropy_gradient_is_the_exact_one():
    torch.manual_seed(1)
    logits = (torch.randn(2, 5, 13) * 4).requires_grad_()
    weights = torch.rand(2, 5)
    (obj.token_entropy(logits, chunk_size=3) * weights).sum().backward()
    ref = logits.detach().double().requires_grad_()
    logp = torch.log_softmax(ref, -1)
    (-(logp.exp() * logp).sum(-1) * weights.double()).sum().backward()
    torch.testing.assert_close(logits.grad.double(), ref.grad, rtol=1e-5, atol=1e-6)


def test_entropy_mask_skips_padding_and_keeps_counted_positions():
    torch.manual_seed(2)
    full = torch.randn(4, 9, 31) * 3
    logits = full[:, :-1]
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1],   # full length
                         [1, 1, 1, 0, 0, 0, 0, 0],   # ended early (right padding)
                         [0, 0, 0, 0, 0, 0, 0, 0],   # dropped row (mask_truncated_completions)
                         [1, 0, 1, 1, 0, 0, 0, 0]])  # a hole before the end
    plain = obj.token_entropy(logits, chunk_size=3)
    for chunk in (1, 3, 1024):
        masked = obj.token_entropy(logits, chunk_size=chunk, mask=mask.float())
        keep = mask.bool()
        torch.testing.assert_close(masked[keep], plain[keep], rtol=1e-6, atol=1e-6)
        assert (masked[~keep] == 0).all()
        # the mean the module logs is the same
        torch.testing.assert_close((masked * mask).sum() / mask.sum(), (plain * mask).sum() / mask.sum())
    # positions after a row's end are never read: NaN / inf there change nothing
    poisoned = full.clone()
    poisoned[1, 3:] = float("nan")
    poisoned[3, 4:] = float("inf")
    torch.testing.assert_close(obj.token_entropy(poisoned[:, :-1], mask=mask), obj.token_entropy(logits, mask=mask))
    with pytest.raises(ValueError, match="mask"):
        obj.token_entropy(logits, mask=mask[:, :-1])


def test_entropy_mask_gradient_matches_unmasked():
    torch.manual_seed(3)
    base = torch.randn(2, 6, 11) * 2
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]).float()
    grads = []
    for m in (None, mask):
        logits = base.clone().requires_grad_()
        (obj.token_entropy(logits, chunk_size=4, mask=m) * mask).sum().backward()
        grads.append(logits.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-7)


def _fit_two_steps(monkeypatch, entropy_fn, **kw):
    if entropy_fn is not None:
        monkeypatch.setattr(obj, "token_entropy", entropy_fn)
    L.seed_everything(0)
    module = GRPO(model="tiny", num_generations=4, max_new_tokens=8, lr=1e-2, prompt_format="plain", **kw)
    seen = []

    class Keep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((outputs["rollout"].completion_ids.clone(), dict(trainer.callback_metrics)))

    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Keep()])
    trainer.fit(module, ToyDataModule(batch_size=2, val_size=0))
    monkeypatch.undo()
    return module, seen


def test_grpo_update_is_unchanged_by_the_cheaper_entropy(monkeypatch):
    """entropy_coef = 0: the entropy is only logged, so samples and weights are bit-identical to the
    old formula over every position; the logged entropy agrees to float rounding."""
    new, seen_new = _fit_two_steps(monkeypatch, None)
    old, seen_old = _fit_two_steps(monkeypatch, old_token_entropy)
    for (ids_a, m_a), (ids_b, m_b) in zip(seen_new, seen_old):
        assert torch.equal(ids_a, ids_b)
        assert float(m_a["loss"]) == float(m_b["loss"])
        assert float(m_a["entropy"]) == pytest.approx(float(m_b["entropy"]), rel=1e-5)
    for a, b in zip(new.policy.parameters(), old.policy.parameters()):
        assert torch.equal(a, b)


def test_grpo_entropy_bonus_trains_the_same(monkeypatch):
    """entropy_coef != 0: the bonus (and its gradient) agrees with the old formula to float rounding.
    SGD, so a weight moves by lr x its gradient (Adam's m / sqrt(v) would blow rounding in a
    near-zero gradient up to a whole lr-sized step)."""
    new, seen_new = _fit_two_steps(monkeypatch, None, entropy_coef=0.1, optimizer="sgd")
    old, seen_old = _fit_two_steps(monkeypatch, old_token_entropy, entropy_coef=0.1, optimizer="sgd")
    assert torch.equal(seen_new[0][0], seen_old[0][0])
    for (_, m_a), (_, m_b) in zip(seen_new, seen_old):
        assert float(m_a["loss"]) == pytest.approx(float(m_b["loss"]), rel=1e-4, abs=1e-6)
        assert float(m_a["entropy"]) == pytest.approx(float(m_b["entropy"]), rel=1e-5)
    for a, b in zip(new.policy.parameters(), old.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- the KV-cache argument
class _Takes:
    def __init__(self, name):
        exec(f"def forward({name}=None, **kwargs): return None", ns := {})
        self.forward = ns["forward"]


def test_cache_argument_follows_the_forward_signature():
    assert cache_argument(_Takes("cache")) == "cache"
    assert cache_argument(_Takes("past_key_values")) == "past_key_values"
    assert cache_argument(SimpleNamespace(forward=len)) == "past_key_values"  # no such parameter
    assert cache_argument(SimpleNamespace(forward=object())) == "past_key_values"  # no signature at all
    assert cache_argument(SimpleNamespace()) == "past_key_values"
    assert output_cache(SimpleNamespace(cache="new", past_key_values="old")) == "new"
    assert output_cache(SimpleNamespace(past_key_values="old")) == "old"


def test_engine_passes_the_cache_by_the_current_name_and_samples_the_same(tiny_policy):
    model, tok = tiny_policy.model.eval(), tiny_policy.tokenizer
    enc = tok(["ab", "abcd"], return_tensors="pt", padding=True)
    ids, mask = enc.input_ids.repeat_interleave(3, 0), enc.attention_mask.repeat_interleave(3, 0)
    engine = RolloutEngine(model, tok, SamplingConfig(max_new_tokens=12, temperature=1.0))
    import inspect

    expected = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    assert engine.cache_arg == expected
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = engine.generate(ids, mask, torch.Generator().manual_seed(5))
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    engine.cache_arg = "past_key_values"  # what the engine passed before (deprecated in transformers 5.24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = engine.generate(ids, mask, torch.Generator().manual_seed(5))
    assert torch.equal(new.completion_ids, old.completion_ids)
    assert torch.equal(new.completion_mask, old.completion_mask)
    assert torch.equal(new.logprobs, old.logprobs)
