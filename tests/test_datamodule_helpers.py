"""The helpers Enigmata and reasoning-gym share: the eval split, the tagged prompt and score."""

from __future__ import annotations

from types import SimpleNamespace

from datamodules.base import distinct_eval_items
from datamodules.tagged import score_tagged, tagged_prompt
from lit_reason.tasks.answer import ANSWER_INSTRUCTION


def test_distinct_eval_items_by_hand():
    """4 per group, so 4 * 4 + 16 = 32 tries each: "a" fills at once, "b" skips the Nones, "c" has
    only 3 prompts and keeps 3 // 2 = 1, "d" skips "a0" (taken by group "a")."""
    prompts = {
        "a": lambda k: f"a{k}",
        "b": lambda k: None if k % 2 == 0 else f"b{k}",
        "c": lambda k: f"c{k % 3}",
        "d": lambda k: "a0" if k == 0 else f"d{k}",
    }
    tries = {g: 0 for g in prompts}

    def make(group, attempt):
        tries[group] += 1
        prompt = prompts[group](attempt)
        return None if prompt is None else SimpleNamespace(prompt=prompt)

    items = distinct_eval_items(["a", "b", "c", "d"], make, 4)
    assert [p.prompt for p in items] == ["a0", "a1", "a2", "a3", "b1", "b3", "b5", "b7", "c0", "d1", "d2", "d3", "d4"]
    assert tries == {"a": 4, "b": 8, "c": 32, "d": 5}
    assert distinct_eval_items(["a"], make, 0) == [] and tries["a"] == 4


def test_tagged_prompt_and_score():
    assert tagged_prompt("What is 2+2?  \n") == f"What is 2+2?\n\n{ANSWER_INSTRUCTION}"
    check = {"4": 1.0, "5": 0.5}.get
    assert score_tagged("so <answer>5</answer> no, <answer> 4 </answer>", check) == 1.0  # the last block, stripped
    assert score_tagged("<answer>5</answer>", check) == 0.5
    assert score_tagged("4", check) == 0.0  # no block: check is not called
    assert score_tagged("<answer>boom</answer>", lambda body: 1 / 0) == 0.0  # a raising check scores 0
    assert score_tagged("<answer>4</answer>", lambda body: 7.0) == 1.0  # clipped to [0, 1]
