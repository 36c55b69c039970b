"""Gradient clipping by global norm under each strategy (GRPO.clip_grad_norm; DeepSpeed's config).

FSDP1 itself needs an accelerator (the real step runs in tests/test_cuda.py); here a stand-in for
the FSDP root checks the dispatch: Lightning's FSDP precision refuses clipping by norm, so GRPO
must call the root's own ``clip_grad_norm_`` there and Lightning's clipping everywhere else, but
under DeepSpeed, whose engine clips from its config (lit_reason.strategies.deepspeed_clipping)."""

from types import SimpleNamespace

import pytest
import torch.distributed.fsdp as fsdp
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

from lit_reason.strategies.deepspeed_clipping import set_deepspeed_gradient_clipping
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


# --------------------------------------------------------------------------- DeepSpeed
# DeepSpeed clips inside its engine from config["gradient_clipping"]; Lightning's clip_gradients is a
# no-op there. A DeepSpeedStrategy built without __init__ (which needs deepspeed installed) holds the
# config dict the engine would be built from.

def _deepspeed(config):
    strategy = object.__new__(DeepSpeedStrategy)
    strategy.config = config
    return strategy


@pytest.mark.parametrize("max_grad_norm, expected", [(0.5, 0.5), (1.0, 1.0), (0.0, 0.0), (None, 0.0)])
def test_max_grad_norm_goes_into_the_deepspeed_config(max_grad_norm, expected):
    strategy = _deepspeed({"zero_optimization": {"stage": 2}})
    assert set_deepspeed_gradient_clipping(strategy, max_grad_norm) is True
    assert strategy.config == {"zero_optimization": {"stage": 2}, "gradient_clipping": expected}
    assert set_deepspeed_gradient_clipping(strategy, max_grad_norm) is True  # again (a second fit): same value, fine


def test_a_deepspeed_config_that_clips_differently_is_one_line():
    with pytest.raises(ValueError) as err:
        set_deepspeed_gradient_clipping(_deepspeed({"gradient_clipping": 0.3}), 1.0)
    assert str(err.value) == ("model.max_grad_norm=1.0 and the DeepSpeed config's gradient_clipping=0.3 disagree "
                              "(DeepSpeed clips from gradient_clipping): set model.max_grad_norm: 0.3 (null = no "
                              "clipping) or drop gradient_clipping from the DeepSpeed config")
    strategy = _deepspeed({"gradient_clipping": 1.0})
    set_deepspeed_gradient_clipping(strategy, 1.0)  # agreeing: kept
    assert strategy.config["gradient_clipping"] == 1.0


def test_other_strategies_are_left_alone():
    ddp = DDPStrategy()
    assert set_deepspeed_gradient_clipping(ddp, 0.5) is False and not hasattr(ddp, "config")


def test_grpo_setup_configures_deepspeed_and_step_clipping_leaves_it_to_the_engine():
    """The module hook writes its max_grad_norm before the engine exists; the per-step clip then
    asks neither Lightning (a no-op under DeepSpeed) nor an FSDP root."""
    from lit_reason.modules import SFT

    for module in (GRPO(model="tiny", max_grad_norm=0.25), SFT(model="tiny", max_grad_norm=0.75)):
        strategy = _deepspeed({})
        module._trainer = SimpleNamespace(strategy=strategy, datamodule=None)
        module.setup("fit")
        assert strategy.config == {"gradient_clipping": module.hparams.max_grad_norm}
    lightning_calls = []
    host = SimpleNamespace(_trainer=SimpleNamespace(strategy=_deepspeed({})),
                           clip_gradients=lambda opt, **kw: lightning_calls.append(kw))
    GRPO.clip_grad_norm(host, None, 0.5)
    assert lightning_calls == []
