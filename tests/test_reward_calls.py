"""Reward functions in both shapes (the project's per-problem one, TRL's batched one), checked
values, bounded calls, and one line for every way a reward can break a run."""

import math
import sys
import textwrap

import pytest
import torch

from datamodules.custom import RowProblem
from lit_reason.tasks.reward_calls import RewardError, is_batched
from lit_reason.tasks.rewards import build_reward_sources, resolve_reward, score_sources, source_metrics

CHAT = [RowProblem(prompt=[{"role": "user", "content": f"What is {q}? Answer in \\boxed{{}}."}], gold=g,
                   columns={"solution": g, "topic": t})
        for q, g, t in (("1/3", "\\frac{1}{3}", "frac"), ("half", "\\frac{1}{2}", "frac"), ("x", "???", "bad"))]
TEXTS = ["It is \\boxed{\\frac{1}{3}}", "It is \\boxed{\\frac{1}{3}}", "It is \\boxed{1}"]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's reward module on PYTHONPATH; ``write(name, source)`` adds one."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name, source):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        return name
    return write


def scored(sources, problems=CHAT, texts=TEXTS):
    return score_sources(sources, problems, texts, [0.0] * len(texts))


def test_shape_is_detected_from_parameter_names():
    assert is_batched(lambda prompts, completions, **kw: []) and is_batched(lambda completions, solution: [])
    assert not is_batched(lambda problem, completion, score: 0.0) and not is_batched(resolve_reward("correct"))


def test_trl_reward_functions_work_unchanged():
    pytest.importorskip("trl")
    pytest.importorskip("math_verify")
    sources = build_reward_sources({"trl.rewards:accuracy_reward": 1.0, "trl.rewards:think_format_reward": 1.0})
    result = scored(sources)
    accuracy = result.per_source["trl.rewards:accuracy_reward"]
    assert accuracy[:2].tolist() == [1.0, 0.0] and math.isnan(accuracy[2])  # unparseable gold: None, abstains
    assert result.per_source["trl.rewards:think_format_reward"].tolist() == [0.0, 0.0, 0.0]  # no <think> block
    m = source_metrics(result.per_source, result.errors())
    assert m["rewards/trl.rewards:accuracy_reward/mean"] == 0.5  # the None row left out of the mean
    thought = scored(sources, CHAT[:1], ["<think>\nsum\n</think>\nIt is \\boxed{\\frac{1}{3}}"])
    assert thought.per_source["trl.rewards:think_format_reward"].tolist() == [1.0]


def test_user_batched_reward_gets_prompts_completions_and_columns(user_module):
    user_module("my_rw", """
        def by_topic(prompts, completions, topic, **kwargs):
            assert isinstance(prompts[0], list) and completions[0][0]["role"] == "assistant"
            return [None if t == "bad" else float(len(c[0]["content"])) for c, t in zip(completions, topic)]

        def only_needed(completions, solution):  # no **kwargs: only the names it asks for are passed
            return [float(s.startswith("\\\\frac")) for s in solution]
        """)
    result = scored(build_reward_sources({"my_rw:by_topic": 1.0, "my_rw:only_needed": 1.0}))
    assert result.per_source["my_rw:by_topic"][:2].tolist() == [len(TEXTS[0])] * 2
    assert math.isnan(result.per_source["my_rw:by_topic"][2])
    assert result.per_source["my_rw:only_needed"].tolist() == [1.0, 1.0, 0.0]
    plain = [RowProblem(prompt="Say hi", columns={"topic": "x"})]
    user_module("my_rw2", "def f(completions, **kw):\n    return [float(isinstance(c, str)) for c in completions]\n")
    assert scored(build_reward_sources({"my_rw2:f": 1.0}), plain, ["hi"]).per_source["my_rw2:f"].tolist() == [1.0]


def test_import_errors_inside_a_user_module_are_shown(user_module):
    user_module("broken_dep", "import no_such_package_xyz\ndef f(completions, **kw):\n    return []\n")
    with pytest.raises(ValueError, match="importing 'broken_dep' failed: ModuleNotFoundError: No module named 'no_such_package_xyz'"):
        resolve_reward("broken_dep:f")
    user_module("broken_code", "x = 1 / 0\n")
    with pytest.raises(ValueError, match="importing 'broken_code' failed: ZeroDivisionError: division by zero"):
        resolve_reward("broken_code:f")
    with pytest.raises(ValueError, match="unknown reward 'not_a_module_q:f': no module 'not_a_module_q'"):
        resolve_reward("not_a_module_q:f")
    user_module("fine", "def g(completions): return [1.0]\n")
    with pytest.raises(ValueError, match="module 'fine' has no 'f'"):
        resolve_reward("fine:f")


BAD = {
    "raises": ("def f(problem, completion, score):\n    raise KeyError('gold')\n", r"raised KeyError: 'gold'"),
    "string": ("def f(completions, **kw):\n    return ['0.9'] * len(completions)\n", r"returned '0.9' \(str\), not a number"),
    "inf": ("def f(completions, **kw):\n    return [1.0, float('inf'), 0.0]\n", r"returned inf, not a finite number"),
    "huge": ("def f(problem, completion, score):\n    return 1e30\n", r"returned 1e\+30, outside its range \[-10000, 10000\]"),
    "exit": ("import sys\ndef f(completions, **kw):\n    sys.exit(3)\n", r"called sys.exit\(3\)"),
    "hang": ("import time\ndef f(completions, **kw):\n    time.sleep(30)\n", r"did not return within 0.5 s \(reward_timeout\)"),
    "length": ("def f(completions, **kw):\n    return [1.0]\n", r"must return a list of 3 values, got 1 values"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_broken_reward_stops_in_one_line_naming_reward_row_and_value(user_module, case):
    source, expected = BAD[case]
    user_module(f"bad_{case}", source)
    name = f"bad_{case}:f"
    with pytest.raises(RewardError) as err:
        scored(build_reward_sources({"correct": 1.0, name: 1.0}, timeout_s=0.5))
    message = str(err.value)
    row = 1 if case == "inf" else 0
    assert "\n" not in message and message.startswith(f"reward {name!r} ")
    assert f"on row {row} (prompt: 'What is " in message and "model.on_reward_error: zero" in message
    assert __import__("re").search(expected, message), message


@pytest.mark.parametrize("case", ["inf", "exit", "string", "hang"])
def test_on_error_zero_counts_failed_rows_and_goes_on(user_module, case):
    user_module(f"bad_{case}", BAD[case][0])
    name = f"bad_{case}:f"
    result = scored(build_reward_sources({"correct": 1.0, name: 1.0}, on_error="zero", timeout_s=0.5))
    failed = 1 if case == "inf" else 3
    assert result.failure_metrics() == {f"rewards/{name}/failed_rows": float(failed), "rewards/correct/failed_rows": 0.0}
    assert torch.isfinite(result.total({"correct": 1.0, name: 1.0})).all()
    if case == "inf":
        assert result.per_source[name].tolist() == [1.0, 0.0, 0.0]


def test_declared_range_and_bad_settings():
    def bounded(problem, completion, score):
        return 2.0
    bounded.reward_range = (0.0, 1.0)
    sources = build_reward_sources({"correct": 1.0})
    sources["b"] = type(sources["correct"])("b", bounded)
    with pytest.raises(RewardError, match=r"reward 'b' returned 2.0, outside its range \[0, 1\]"):
        scored(sources)
    with pytest.raises(ValueError, match="on_reward_error='skip'"):
        build_reward_sources({"correct": 1.0}, on_error="skip")
    with pytest.raises(ValueError, match="reward_ranges names \\['corect'\\]"):
        build_reward_sources({"correct": 1.0}, ranges={"corect": [0, 1]})
