"""``model.max_grad_norm`` under DeepSpeed.

DeepSpeed clips gradients inside its engine's ``step()``, from the ``gradient_clipping`` key of its
config; Lightning's ``clip_gradients`` does nothing under DeepSpeed, and Lightning fills that key
from ``Trainer(gradient_clip_val)``, which manual optimization (every module here) may not set. Left
alone, DeepSpeed runs would never clip. So the modules write their ``max_grad_norm`` into the
strategy's config in ``setup``, before the engine is built, and a config that already sets another
value stops with one line.
"""

from __future__ import annotations

from typing import Any


def set_deepspeed_gradient_clipping(strategy: Any, max_grad_norm: float | None) -> bool:
    """Put ``max_grad_norm`` (None or <= 0: no clipping, 0.0) into a ``DeepSpeedStrategy``'s config;
    returns whether ``strategy`` is one (other strategies are left untouched)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    if not isinstance(strategy, DeepSpeedStrategy):
        return False
    wanted = float(max_grad_norm) if max_grad_norm is not None and max_grad_norm > 0 else 0.0
    config = strategy.config
    if config is None:  # Lightning itself refuses this when the engine is built
        return True
    given = config.get("gradient_clipping")
    if given is not None and float(given) != wanted:
        raise ValueError(f"model.max_grad_norm={max_grad_norm} and the DeepSpeed config's gradient_clipping={given} "
                         f"disagree (DeepSpeed clips from gradient_clipping): set model.max_grad_norm: {given} "
                         "(null = no clipping) or drop gradient_clipping from the DeepSpeed config")
    config["gradient_clipping"] = wanted
    return True
