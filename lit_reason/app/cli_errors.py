"""Bad input ends the CLI in one line, ``error: <what to fix>``, and exit code 2.

Why this exists: jsonargparse builds the module and the DataModule itself, so a ``ValueError``
raised in their ``__init__`` (a bad setting, a missing data file, an unloadable model) reaches the
user wrapped in a jsonargparse ``ValueError`` whose traceback is ~150 lines, with the one sentence
that matters in the middle; and its own parse errors are a full usage dump. The messages raised by
the project for bad input are already written as one line naming the fix, so the CLI finds that
exception in the ``__cause__`` / ``__context__`` chain and prints only its message.

A deliberate stop (``lit_reason.utils.faults.RunStopped``: a bad checkpoint, a diverged run, a
full disk, a preemption) is printed the same way and exits with its own code (3, 4, 143).

Which exceptions count as bad input (everything else keeps its traceback, so bugs stay debuggable):
  * ``PolicyLoadError`` (and the ``BuiltinModelError`` it wraps), wherever it is raised;
  * ``RewardError``: a reward source failed during training (raised before the update);
  * Lightning's ``MisconfigurationException`` (a Trainer setting it rejects), likewise;
  * ``SamplerWorkerError`` (an async-rollout sampler died, crashed or stalled: the line names it
    and what it was doing; its own traceback, if any, is already on the terminal);
  * a plain ``ValueError`` / ``FileNotFoundError`` / ``ImportError`` (an optional dependency
    that is missing, e.g. ``pip install peft``) raised by project code (``lit_reason``,
    ``datamodules``, ``callbacks``) while a LightningModule, LightningDataModule or Callback runs
    ``__init__``, ``prepare_data`` or ``setup``: a check of a setting, not a failure in training;
  * jsonargparse's ``ArgumentError`` (unknown key or class, a value of the wrong type, a missing
    config file): condensed to ``<key>: <jsonargparse's innermost sentence>``;
  * a YAML option group's own check (``model.async_rollouts.max_staleness must be >= 0 ...``,
    raised by its dataclass) that jsonargparse nests in a ``ValueError`` listing the union's
    subtypes: that line alone.

Set ``LIT_REASON_TRACEBACK=1`` to get the full traceback of these too.
"""

from __future__ import annotations

import re
from argparse import ArgumentError
from collections.abc import Iterator

_PROJECT_PACKAGES = ("lit_reason", "datamodules", "callbacks")
_SETTINGS_HOOKS = {"__init__", "prepare_data", "setup"}
_LIGHTNING_NAME = re.compile(r"You selected an invalid (strategy|accelerator) name: `\w+=(.+?)`")
_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":')
_NESTED_SETTING = re.compile(r"^\s*- ((?:model|data|trainer)\.\w+(?:\.\w+)+\S* .+)$", re.MULTILINE)


def one_line_error(exc: BaseException) -> str | None:
    """The one-line message for bad input somewhere in ``exc``'s chain, or None (a real error)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from lit_reason.models.policy import PolicyLoadError
    from lit_reason.models.pretrained import BuiltinModelError
    from lit_reason.rollout_step.sampler_worker import SamplerWorkerError
    from lit_reason.tasks.reward_calls import RewardError
    from lit_reason.utils.faults import RunStopped

    chain = list(_chain(exc))
    for err in chain:
        if isinstance(err, RunStopped):  # a fault or a bad checkpoint, already said in one line
            return _flat(str(err))
        if isinstance(err, MisconfigurationException):
            return f"trainer: {_flat(str(err))}"
        if type(err) is ValueError and _LIGHTNING_NAME.match(str(err)):
            return _unknown_trainer_name(str(err))
        if isinstance(err, (PolicyLoadError, BuiltinModelError, RewardError, SamplerWorkerError)) or (
            type(err) in (ValueError, FileNotFoundError, ImportError) and _raised_checking_settings(err)
        ):
            return _flat(str(err)) or type(err).__name__
    for i, err in enumerate(chain):
        if isinstance(err, ArgumentError):
            return _condense_argument_error(chain[i:])
    for err in chain:  # a config dataclass's own check, reported inside jsonargparse's union report
        match = _NESTED_SETTING.search(str(err)) if type(err) is ValueError else None
        if match:
            return match.group(1)
    return None


def exit_code(exc: BaseException) -> int:
    """The exit code of a deliberate stop in ``exc``'s chain (lit_reason.utils.faults), else 2 (bad input)."""
    from lit_reason.utils.faults import EXIT_BAD_INPUT, RunStopped

    return next((err.exit_code for err in _chain(exc) if isinstance(err, RunStopped)), EXIT_BAD_INPUT)


def _unknown_trainer_name(message: str) -> str:
    """``trainer.strategy='foo' is not a strategy: choose one of [...]`` from Lightning's sentence."""
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    kind, value = _LIGHTNING_NAME.match(message).groups()
    names = StrategyRegistry.available_strategies() if kind == "strategy" else AcceleratorRegistry.available_accelerators()
    return f"trainer.{kind}={value} is not a known {kind}: choose one of {['auto', *sorted(names)]} (or a class path)"


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _raised_checking_settings(err: BaseException) -> bool:
    """Raised by project code, under ``__init__`` / ``prepare_data`` / ``setup`` of a Lightning object."""
    import lightning as L

    frames, tb = [], err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    if not frames or not str(frames[-1].f_globals.get("__name__", "")).startswith(_PROJECT_PACKAGES):
        return False
    return any(
        f.f_code.co_name in _SETTINGS_HOOKS
        and isinstance(f.f_locals.get("self"), (L.LightningModule, L.LightningDataModule, L.Callback))
        for f in frames
    )


def _condense_argument_error(chain: list[BaseException]) -> str:
    """``model.num_generations: Expected a <class 'int'>. Got value: abc`` from jsonargparse's
    nested report: the ``Parser key "..."`` prefixes joined, then the innermost sentence. A report
    with no key (unrecognized arguments, a YAML syntax error) is already the sentence."""
    keys, previous = [], None
    for err in chain:
        message = str(err)
        match = _PARSER_KEY.match(message)
        if match and message != previous:  # jsonargparse re-raises the same message several times
            keys.append(match.group(1))
        previous = message
    if not keys:
        return _flat(str(chain[0]))
    innermost = _flat(_PARSER_KEY.sub("", str(chain[-1])).split("\nGiven value")[0]).lstrip("- ")
    return f"{'.'.join(keys)}: {innermost}{_suggestion(keys[0], innermost)}"


_UNKNOWN_OPTION = re.compile(r"Option '([^']+)' is not accepted")
_UNKNOWN_CLASS = re.compile(r"Expected a dot import path string: (\S+)")


def _suggestion(section: str, sentence: str) -> str:
    """`` (did you mean 'X'?)`` for an unknown option or class name of the model, data or trainer."""
    import difflib
    import inspect

    import lightning as L

    import callbacks
    import datamodules
    import lit_reason.modules

    classes = {"model": [getattr(lit_reason.modules, n) for n in lit_reason.modules.__all__],
               "data": [getattr(datamodules, n) for n in datamodules.__all__],
               "trainer": [L.Trainer], "callbacks": [getattr(callbacks, n) for n in callbacks.__all__]}
    option, name = _UNKNOWN_OPTION.search(sentence), _UNKNOWN_CLASS.search(sentence)
    if option:
        candidates = {p for c in classes.get(section, []) if inspect.isclass(c)
                      for p in inspect.signature(c.__init__).parameters if p not in ("self", "args", "kwargs")}
        wrong = option.group(1)
    elif name:
        candidates = {c.__name__ for c in classes.get(section, []) if inspect.isclass(c)}
        wrong = name.group(1).rsplit(".", 1)[-1]
    else:
        return ""
    close = difflib.get_close_matches(wrong, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _flat(text: str) -> str:
    return " ".join(text.split())
