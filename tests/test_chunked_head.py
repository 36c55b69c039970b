"""The chunked LM head (lit_reason.algorithms.lm_head): same values and gradients as full logits, memory that
grows with the chunk and not with the vocabulary, and the same training steps in every module."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch

from datamodules.toy import ToyDataModule
from lit_reason.algorithms import objectives as obj
from lit_reason.algorithms.lm_head import chunked_head_stats, restricted_probs_from_head
from lit_reason.modules import GRPO, HRPO, NTHR, SFT, Intuitor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def full_logit_terms(hidden, weight, bias, targets, temperature, certainty_temperature):
    """The unchunked reference: plain autograd through full ``[N, V]`` logits."""
    raw = hidden @ weight.T + (0 if bias is None else bias)
    logp_all = torch.log_softmax(raw / temperature, -1)
    logps = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    zc = raw / certainty_temperature
    certainty = torch.logsumexp(zc, -1) - zc.mean(-1) - math.log(weight.shape[0])
    return logps, entropy, certainty


def test_values_and_gradients_equal_the_full_logits_in_fp32():
    torch.manual_seed(0)
    B, T, H, V = 3, 11, 16, 97
    hidden = torch.randn(B, T, H, requires_grad=True)
    weight = torch.randn(V, H, requires_grad=True)
    bias = torch.randn(V, requires_grad=True)
    targets = torch.randint(0, V, (B, T))
    mask = (torch.arange(T) < torch.tensor([[11], [7], [2]])).float()  # rows end at different lengths
    w_logp, w_ent, w_cert = torch.randn(3, B, T)

    def loss(logps, entropy, certainty):
        return ((w_logp * logps + w_ent * entropy + w_cert * certainty) * mask).sum()

    ref = full_logit_terms(hidden, weight, bias, targets, 0.7, 1.3)
    ref_grads = torch.autograd.grad(loss(*ref), (hidden, weight, bias))
    # chunks that divide neither the 33 positions nor the 97 columns
    stats = chunked_head_stats(hidden, weight, targets, bias, temperature=0.7, entropy=True,
                               certainty_temperature=1.3, chunk_size=4, vocab_chunk_size=10)
    grads = torch.autograd.grad(loss(stats.logps, stats.entropy, stats.certainty), (hidden, weight, bias))
    for got, want in zip((stats.logps, stats.entropy, stats.certainty), ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    # and the project's own full-logits functions agree on the values
    logits = (hidden @ weight.T + bias).detach()
    torch.testing.assert_close(stats.logps, obj.token_logps(logits / 0.7, targets), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats.entropy, obj.token_entropy(logits / 0.7), rtol=1e-5, atol=1e-5)
    per_row = (stats.certainty * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(per_row, obj.self_certainty(logits, mask, temperature=1.3), rtol=1e-5, atol=1e-5)


def test_float64_gradcheck():
    torch.manual_seed(1)
    hidden = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(9, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (5,))

    def all_terms(h, w, b):
        s = chunked_head_stats(h, w, targets, b, temperature=0.6, entropy=True, certainty_temperature=2.0,
                               chunk_size=2, vocab_chunk_size=4)
        return s.logps, s.lse, s.entropy, s.certainty

    assert torch.autograd.gradcheck(all_terms, (hidden, weight, bias))


def test_tied_weights_get_the_sum_of_both_gradients():
    """The head IS the embedding table: its gradient is the embedding's plus the head's."""
    torch.manual_seed(2)
    table = torch.nn.Embedding(50, 8)
    mix = torch.randn(8, 8)
    ids, targets = torch.randint(0, 50, (6,)), torch.randint(0, 50, (6,))

    def grad_of(use_chunks: bool) -> torch.Tensor:
        table.zero_grad()
        hidden = torch.tanh(table(ids) @ mix)
        if use_chunks:
            logps = chunked_head_stats(hidden, table.weight, targets, temperature=1.5, chunk_size=4,
                                       vocab_chunk_size=16).logps
        else:
            logps = torch.log_softmax(hidden @ table.weight.T / 1.5, -1).gather(-1, targets[:, None]).squeeze(-1)
        logps.sum().backward()
        return table.weight.grad.clone()

    torch.testing.assert_close(grad_of(True), grad_of(False), rtol=1e-5, atol=1e-6)


def test_fp32_head_is_closer_to_exact_than_the_bf16_matmul():
    torch.manual_seed(3)
    hidden = torch.randn(64, 32).bfloat16()
    weight = torch.randn(500, 32).bfloat16()
    targets = torch.randint(0, 500, (64,))
    exact = torch.log_softmax(hidden.double() @ weight.double().T, -1).gather(-1, targets[:, None]).squeeze(-1)
    fp32 = chunked_head_stats(hidden, weight, targets, chunk_size=16, fp32=True).logps
    bf16 = chunked_head_stats(hidden, weight, targets, chunk_size=16).logps
    err32, err16 = (fp32.double() - exact).abs().max(), (bf16.double() - exact).abs().max()
    assert err32 < 1e-4 and err16 > 10 * err32, (err32, err16)


def test_restricted_probs_from_head_read_the_full_softmax():
    torch.manual_seed(4)
    hidden, weight = torch.randn(7, 8), torch.randn(40, 8)
    columns = torch.tensor([0, 3, 17, 39])
    stats = chunked_head_stats(hidden, weight, torch.zeros(7, dtype=torch.long), temperature=0.5, chunk_size=3,
                               vocab_chunk_size=16)
    probs = restricted_probs_from_head(hidden, weight, columns, stats.lse, temperature=0.5)
    torch.testing.assert_close(probs, torch.softmax(hidden @ weight.T / 0.5, -1)[:, columns])


# ----------------------------------------------------------------------------- memory, measured
MEASURE = textwrap.dedent("""
    import json, sys, torch
    from lit_reason.algorithms.lm_head import chunked_head_stats

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    def peak_bytes(n, vocab, chunk, full):
        g = torch.Generator().manual_seed(0)
        h = torch.randn(n, 16, generator=g, requires_grad=True)
        w = torch.randn(vocab, 16, generator=g, requires_grad=True)
        t = torch.randint(0, vocab, (n,), generator=g)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter (VmHWM)
        base = status("VmRSS:")
        if full:
            logp = torch.log_softmax(h @ w.T / 0.7, -1)
            (logp.gather(1, t[:, None]).sum() - (logp.exp() * logp).sum()).backward()
        else:
            s = chunked_head_stats(h, w, t, temperature=0.7, entropy=True, chunk_size=chunk, vocab_chunk_size=2048)
            (s.logps.sum() + s.entropy.sum()).backward()
        return status("VmHWM:") - base

    peak_bytes(256, 4096, 64, False)  # warm-up: first-call allocations
    print(json.dumps([peak_bytes(*case) for case in json.loads(sys.argv[1])]))
""")


def measured_peaks(cases):
    """Peak RSS increase of one forward + backward per case, in a fresh process with glibc told to
    give every block over 64 kB back on free (so RSS follows live memory)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(cases)], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS counters")
def test_peak_memory_grows_with_the_chunk_not_with_the_vocabulary():
    n, mb = 512, 2**20
    small_v, big_v, small_chunk, big_chunk, full_small, full_big = measured_peaks([
        [n, 4096, 64, False], [n, 16384, 64, False], [n, 4096, 64, False], [n, 4096, 512, False],
        [n, 4096, 0, True], [n, 16384, 0, True],
    ])
    # 4x the vocabulary: the chunked peak stays (only the 16-wide weight and its gradient grow, 1.5 MB)
    assert big_v < small_v + 4 * mb, (small_v / mb, big_v / mb)
    # 8x the chunk: the peak grows (a 512 x 2048 float32 block is 4 MB, several are live)
    assert big_chunk > small_chunk + 4 * mb, (small_chunk / mb, big_chunk / mb)
    # full logits grow with the vocabulary and are far above the chunked path
    assert full_big > 3 * full_small and full_big > 5 * big_v, (full_small / mb, full_big / mb, big_v / mb)


def test_saved_for_backward_is_independent_of_the_vocabulary():
    """What autograd keeps between forward and backward: the inputs and [N] vectors, never [N, V]."""
    def saved(vocab: int) -> int:
        sizes = []
        hidden = torch.randn(64, 16, requires_grad=True)
        weight = torch.randn(vocab, 16, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            chunked_head_stats(hidden, weight, torch.zeros(64, dtype=torch.long), entropy=True, chunk_size=8)
        return sum(sizes) - weight.numel() * weight.element_size()

    assert saved(1000) == saved(30000)


# ----------------------------------------------------------------------------- the modules
STEP = dict(model="tiny", num_generations=4, max_new_tokens=8, lr=0.5, optimizer="sgd", temperature=0.7,
            prompt_format="plain")


def trained(cls, chunked: bool, steps: int = 2, data=None, **kw):
    L.seed_everything(0)
    module = cls(**{**STEP, **kw}, chunked_lm_head=chunked, logprob_chunk_size=5)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=data or ToyDataModule(batch_size=2, val_size=0))
    return module


@pytest.mark.parametrize("cls,kw", [
    (GRPO, dict(beta=0.05, entropy_coef=0.01, num_iterations=2)),  # old + reference passes, entropy gradient
    (Intuitor, dict()),
    (NTHR, dict(rewards={"correct": 1.0}, eta=0.0, beta_nthr=0.0)),
    (HRPO, dict(delimiter="", lr=0.05)),
], ids=["grpo", "intuitor", "nthr", "hrpo"])
def test_module_steps_are_the_same_with_and_without_the_chunked_head(cls, kw):
    chunked, full = trained(cls, True, **kw), trained(cls, False, **kw)
    init = cls(**{**STEP, **kw}).policy.state_dict()
    state = full.policy.state_dict()
    assert any(not torch.equal(state[k], init[k]) for k in state), "the reference run did not train"
    for name, value in chunked.policy.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=2e-6, msg=lambda m: f"{name}: {m}")


def test_the_chunked_path_never_calls_the_head():
    module = GRPO(**STEP)
    rollout = module.generate([ToyDataModule(batch_size=2, val_size=0).train_dataset()[0]],
                              generator=torch.Generator().manual_seed(0))
    calls = []
    module.policy.lm_head.register_forward_hook(lambda *args: calls.append(1))
    scores = module.completion_scores(module.policy, rollout, entropy=True)
    assert not calls and scores.logits is None
    module.hparams.chunked_lm_head = False
    assert module.completion_scores(module.policy, rollout).logits is not None and calls


def test_sft_loss_and_gradients_are_the_same_with_and_without_the_chunked_head():
    problems = [ToyDataModule(batch_size=2, val_size=0).train_dataset()[i] for i in range(3)]
    results = []
    for chunked in (True, False):
        torch.manual_seed(0)
        sft = SFT(model="tiny", prompt_format="plain", chunked_lm_head=chunked, logprob_chunk_size=3)
        loss, count = sft.supervised_loss(problems)
        loss.backward()
        results.append((loss.detach(), count, {n: p.grad.clone() for n, p in sft.policy.named_parameters()}))
    (loss_c, count_c, grads_c), (loss_f, count_f, grads_f) = results
    assert count_c == count_f > 0
    torch.testing.assert_close(loss_c, loss_f, rtol=1e-6, atol=1e-6)
    for name in grads_f:
        torch.testing.assert_close(grads_c[name], grads_f[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_lora_reference_through_the_chunked_head_is_the_base_with_adapters_off():
    pytest.importorskip("peft")
    module = GRPO(**STEP, beta=0.1, lora={"r": 4, "target_modules": ["q_proj", "v_proj"]})
    with torch.no_grad():  # move the adapters off zero so that policy and base differ
        for name, p in module.policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    rollout = module.generate([ToyDataModule(batch_size=2, val_size=0).train_dataset()[0]],
                              generator=torch.Generator().manual_seed(0))
    counted = rollout.completion_mask.float()
    with torch.no_grad():
        chunked = module.reference_scores(rollout).logps
        policy = module.completion_scores(module.policy, rollout).logps
        module.hparams.chunked_lm_head = False
        full = module.reference_scores(rollout).logps
    torch.testing.assert_close(chunked * counted, full * counted, rtol=1e-5, atol=1e-5)
    assert ((policy - chunked).abs() * counted).max() > 1e-3  # the adapters were really off
    assert module.policy.training  # adapters_off restored the mode


def test_cast_lm_head_to_fp32_is_the_same_switch_on_both_paths():
    module = GRPO(**{**STEP, "dtype": "bfloat16"}, cast_lm_head_to_fp32=True)
    rollout = module.generate([ToyDataModule(batch_size=2, val_size=0).train_dataset()[0]],
                              generator=torch.Generator().manual_seed(0))
    counted = rollout.completion_mask.bool()
    with torch.no_grad():
        chunked_fp32 = module.completion_scores(module.policy, rollout).logps[counted]
        module.hparams.chunked_lm_head = False
        full_fp32 = module.completion_scores(module.policy, rollout).logps[counted]
        module.hparams.cast_lm_head_to_fp32 = False
        full_bf16 = module.completion_scores(module.policy, rollout).logps[counted]
    torch.testing.assert_close(chunked_fp32, full_fp32, rtol=1e-5, atol=1e-5)  # same float32 matmul
    assert (full_bf16 - full_fp32).abs().max() > 1e-4  # and it is not the bf16 head
