"""Gradient clipping by global norm under each strategy (GRPO.clip_grad_norm).

FSDP1 itself needs an accelerator (the real step runs in tests/test_cuda.py); here a stand-in for
the FSDP root checks the dispatch: Lightning's FSDP precision refuses clipping by norm, so GRPO
must call the root's own ``clip_grad_norm_`` there and Lightning's clipping everywhere else."""

from types import SimpleNamespace

import torch.distributed.fsdp as fsdp

from lit_reason.modules.grpo import GRPO


class _Root:
    def __init__(self):
        self.calls = []

    def clip_grad_norm_(self, max_norm):
        self.calls.append(max_norm)


def _host(model, lightning_calls):
    return SimpleNamespace(_trainer=SimpleNamespace(strategy=SimpleNamespace(model=model)),
                           clip_gradients=lambda opt, **kw: lightning_calls.append(kw))


def test_under_fsdp_the_root_clips_and_lightning_is_not_asked(monkeypatch):
    monkeypatch.setattr(fsdp, "FullyShardedDataParallel", _Root)
    root, lightning_calls = _Root(), []
    GRPO.clip_grad_norm(_host(root, lightning_calls), None, 0.5)
    assert root.calls == [0.5] and lightning_calls == []


def test_elsewhere_lightning_clips_by_norm():
    lightning_calls = []
    GRPO.clip_grad_norm(_host(object(), lightning_calls), None, 0.5)
    assert lightning_calls == [{"gradient_clip_val": 0.5, "gradient_clip_algorithm": "norm"}]
