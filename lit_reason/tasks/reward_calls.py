"""Calling reward functions safely, in either shape a user brings.

Two shapes, told apart by the parameter names (:func:`is_batched`):

* per problem, the project's own: ``fn(problem, completion, score) -> float | None``;
* batched, TRL's: ``fn(prompts, completions, **columns) -> list[float | None]``, called with
  keywords: ``prompts`` and ``completions`` (chat-message lists when the prompt is chat messages,
  as TRL does for conversational data, else strings) and every extra column of the problems
  (``problem.columns``) as a list, one entry per completion.

A reward is user code on model output, so every call is checked (:func:`check_value`): a value
that is not a real number (a string, a tensor), not finite, or outside the source's range is a
failure like an exception. Each source's calls for one batch run in a daemon thread with a
timeout, so ``sys.exit`` or a hang inside a reward ends in one line instead of a dead run.
What happens on a failure is :class:`RewardSources`' ``on_error``: ``stop`` raises
:class:`RewardError` (one line: the reward, the row's prompt start, the value or exception) before
anything is trained on the batch; ``zero`` counts the row as 0 and the failures are logged.
"""

from __future__ import annotations

import inspect
import math
import numbers
import threading
from collections.abc import Callable, Sequence
from typing import Any

ON_ERROR = ("stop", "zero")
#: The range a source without a declared one must stay in: far above any sane reward scale, so
#: only a broken value (1e30, an overflowed sum) trips it.
DEFAULT_RANGE = (-1e4, 1e4)


class RewardError(ValueError):
    """A reward source failed in a way that must stop training (the message is one line)."""


def is_batched(fn: Callable) -> bool:
    """TRL's shape: a parameter named ``prompts`` or ``completions``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "prompts" in params or "completions" in params


def prompt_start(prompt: Any, chars: int = 48) -> str:
    """The start of a prompt for an error line (the last message's text for chat prompts)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        prompt = prompt[-1].get("content", "")
    text = " ".join(str(prompt).split())
    return text if len(text) <= chars else text[: chars - 3] + "..."


def check_value(value: Any, low: float, high: float) -> tuple[float, str | None]:
    """``(float value or NaN for None, None)`` when the value is acceptable, else ``(0.0, why)``."""
    if value is None:
        return math.nan, None
    if not isinstance(value, numbers.Real):
        return 0.0, f"returned {value!r} ({type(value).__name__}), not a number"
    value = float(value)
    if not math.isfinite(value):
        return 0.0, f"returned {value!r}, not a finite number"
    if not low <= value <= high:
        return 0.0, f"returned {value!r}, outside its range [{low:g}, {high:g}]"
    return value, None


def _as_completion(prompt: Any, text: str) -> Any:
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def _column_lists(problems: Sequence[Any]) -> dict[str, list]:
    names: list[str] = []
    for problem in problems:
        names += [k for k in (getattr(problem, "columns", None) or {}) if k not in names]
    return {k: [(getattr(p, "columns", None) or {}).get(k) for p in problems] for k in names}


def _describe(err: BaseException) -> str:
    if isinstance(err, SystemExit):
        return f"called sys.exit({err.code!r})"
    return f"raised {type(err).__name__}: {' '.join(str(err).split())[:200]}"


class RewardSource:
    """One named reward function, its shape detected, its calls checked and bounded."""

    def __init__(self, name: str, fn: Callable, value_range: Sequence[float] | None = None,
                 timeout_s: float | None = None) -> None:
        self.name, self.fn, self.timeout_s = name, fn, timeout_s
        self.batched = is_batched(fn)
        low, high = value_range or getattr(fn, "reward_range", None) or DEFAULT_RANGE
        self.low, self.high = float(low), float(high)

    def _values(self, problems: Sequence[Any], completions: Sequence[str], scores: Sequence[float]) -> list:
        """Raw values, or the exception of a row (a batched call that raises fails every row)."""
        if not self.batched:
            out = []
            for problem, text, score in zip(problems, completions, scores):
                try:
                    out.append(self.fn(problem, text, score))
                except BaseException as err:  # noqa: BLE001 - user code on model output, sys.exit included
                    out.append(err)
            return out
        prompts = [getattr(p, "prompt", None) for p in problems]
        kwargs = {"prompts": prompts, "completions": [_as_completion(p, t) for p, t in zip(prompts, completions)],
                  **_column_lists(problems)}
        params = inspect.signature(self.fn).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
        try:
            values = self.fn(**kwargs)
        except BaseException as err:  # noqa: BLE001
            return [err] * len(completions)
        if not isinstance(values, (list, tuple)) or len(values) != len(completions):
            got = f"{len(values)} values" if isinstance(values, (list, tuple)) else repr(values)[:60]
            return [TypeError(f"a batched reward must return a list of {len(completions)} values, got {got}")] * len(completions)
        return list(values)

    def __call__(self, problems: Sequence[Any], completions: Sequence[str],
                 scores: Sequence[float]) -> tuple[list[float], dict[int, str]]:
        """``(values with NaN for None and 0 for failures, {row: why it failed})``."""
        result: list = []
        if self.timeout_s is None:
            result = self._values(problems, completions, scores)
        else:
            worker = threading.Thread(target=lambda: result.extend(self._values(problems, completions, scores)),
                                      daemon=True, name=f"reward:{self.name}")
            worker.start()
            worker.join(self.timeout_s)
            if worker.is_alive():  # the thread is left behind (a daemon: it cannot block the exit)
                why = f"did not return within {self.timeout_s:g} s (reward_timeout) on a batch of {len(completions)}"
                return [0.0] * len(completions), dict.fromkeys(range(len(completions)), why)
        values, failures = [], {}
        for row, raw in enumerate(result):
            value, why = (0.0, _describe(raw)) if isinstance(raw, BaseException) else check_value(raw, self.low, self.high)
            values.append(value)
            if why is not None:
                failures[row] = why
        return values, failures


class RewardSources(dict):
    """name -> :class:`RewardSource`, with what to do when one fails (see the module doc)."""

    def __init__(self, sources: dict[str, RewardSource], on_error: str = "stop") -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"model.on_reward_error={on_error!r}: choose 'stop' (end the run in one line) or "
                             "'zero' (count a failed row as 0 and log the failures)")
        super().__init__(sources)
        self.on_error = on_error

    def raise_first(self, failures: dict[str, dict[int, str]], problems: Sequence[Any]) -> None:
        """In ``stop`` mode, one line for the first failure, before anything trains on it."""
        if self.on_error != "stop":
            return
        for name, rows in failures.items():
            if rows:
                row = min(rows)
                more = f" (and {len(rows) - 1} more row(s))" if len(rows) > 1 else ""
                raise RewardError(
                    f"reward {name!r} {rows[row]} on row {row} (prompt: {prompt_start(getattr(problems[row], 'prompt', ''))!r})"
                    f"{more}: fix the reward, or set model.on_reward_error: zero to count such rows as 0 and go on")
