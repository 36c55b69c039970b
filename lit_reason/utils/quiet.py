"""Silence the library messages known to be harmless here, so a run shows its progress and results.

Each entry names one message and says why it is harmless for this project; nothing is silenced
wholesale (no blanket ``ignore``, no logger turned off), so any other warning still shows. The
``lit-reason`` entry point, ``lit-reason evaluate`` and the quickstart call
:func:`quiet_known_warnings` first.
"""

from __future__ import annotations

import logging
import warnings

#: (message regex matched at the start, warning category, why it is harmless here)
KNOWN_HARMLESS_WARNINGS: list[tuple[str, type[Warning], str]] = [
    (r"Found \d+ module\(s\) in eval mode at the start of training", Warning,
     "GRPO-family modules keep the frozen reference model (and a policy loaded by from_pretrained) in eval "
     "mode on purpose: dropout off, so training log-probs match the sampler's"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
     "raised inside Lightning's own pytree helper by torch >= 2.10; nothing for the user to change"),
]

#: (logger name, message prefix, why): INFO lines that advertise a product or state that nothing is there.
KNOWN_HARMLESS_LOG_LINES: list[tuple[str, str, str]] = [
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip:", "an advertisement for a cloud logger"),
    ("lightning.pytorch.utilities.rank_zero", "GPU available: False", "the machine has no GPU: the line says nothing"),
    ("lightning.pytorch.utilities.rank_zero", "TPU available: False", "the machine has no TPU: the line says nothing"),
]


class _DropLines(logging.Filter):
    def __init__(self, prefixes: list[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


#: transformers' per-load progress bars: sub-second for the models here, and they interleave with
#: the training progress bar. Hub download bars are left alone (a first download takes minutes).
QUIET_PROGRESS_BARS = ("Loading weights", "Writing model shards")


def _hide_quick_bars(factory, args, kwargs):
    if kwargs.get("desc") in QUIET_PROGRESS_BARS:
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


def quiet_known_warnings() -> None:
    """Install the filters above (idempotent)."""
    for message, category, _why in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    by_logger: dict[str, list[str]] = {}
    for name, prefix, _why in KNOWN_HARMLESS_LOG_LINES:
        by_logger.setdefault(name, []).append(prefix)
    for name, prefixes in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(prefixes))
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # transformers is a dependency; this only keeps the helper importable alone
        return
    if hasattr(hf_logging, "set_tqdm_hook"):
        hf_logging.set_tqdm_hook(_hide_quick_bars)
