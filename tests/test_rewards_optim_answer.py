"""Reward combination, LR schedules and the shared answer extractor, checked by hand."""

import math

import pytest
import torch

from lit_reason.tasks.answer import MAX_COMPLETION_CHARS, count_answer_blocks, extract_answer, format_answer
from lit_reason.utils.optim import build_optimizer, build_scheduler, lr_multiplier
from lit_reason.tasks.rewards import answer_format, compute_rewards, resolve_reward


def half_or_none(problem, completion, score):
    return None if completion == "skip" else 0.5


def test_weighted_sum_and_abstaining_sources():
    fns = {"correct": resolve_reward("correct"), "half": half_or_none}
    total, per, errors = compute_rewards(fns, {"correct": 2.0, "half": 1.0}, [None] * 3, ["a", "skip", "b"], [1.0, 0.0, 0.0])
    # row 0: 2*1 + .5 = 2.5; row 1: 2*0 + (abstain) = 0; row 2: 0 + .5
    assert total.tolist() == pytest.approx([2.5, 0.0, 0.5])
    assert math.isnan(per["half"][1]) and not errors
    only_abstaining = {"half": half_or_none}
    total, _, _ = compute_rewards(only_abstaining, {"half": 1.0}, [None], ["skip"], [0.0])
    assert math.isnan(total[0])  # left out of the group baseline downstream


def test_format_reward_wants_exactly_one_block():
    assert answer_format(None, "x <answer>1</answer>", 0) == 1.0
    assert answer_format(None, "<answer>1</answer><answer>2</answer>", 0) == 0.0
    assert answer_format(None, "no tags", 0) == 0.0


def test_lr_warmup_then_cosine_by_hand():
    # 10 steps, 2 warmup: step 0 -> 1/2, step 1 -> 1, then cosine over 8 steps: step 6 is halfway -> .5
    assert lr_multiplier(0, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(1, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(10, 10, 2, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(6, 10, 2, "linear") == pytest.approx(0.5)
    assert lr_multiplier(7, 10, 0, "constant") == 1.0


def test_scheduler_drives_the_optimizer_and_8bit_adamw_builds():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = build_optimizer([{"params": [p]}], "adamw", lr=1.0)
    sched = build_scheduler(opt, "linear", total_steps=4, warmup_ratio=0.5)  # 2 warmup steps
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.5])
    import bitsandbytes as bnb

    assert isinstance(build_optimizer([{"params": [p]}], "adamw8bit", lr=1e-3), bnb.optim.AdamW8bit)
    with pytest.raises(ValueError, match="model.optimizer"):
        build_optimizer([{"params": [p]}], "lion")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("reasoning <answer>42</answer>", "42"),
        ("<answer>1</answer> then <answer> 2 </answer>", "2"),  # the last block
        ("<answer>a<answer>b</answer>", "b"),  # nested open tags: innermost before the close
        ("<answer>unclosed", None),
        ("</answer> only", None),
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_extract_answer_cases(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_is_bounded():
    huge = "x" * (MAX_COMPLETION_CHARS + 1) + format_answer("1")
    assert extract_answer(huge) is None
    assert extract_answer(format_answer("y" * 10_000)) is None
    adversarial = "<answer>" * 5_000 + "</answer>"  # 40 KB of open tags
    assert extract_answer(adversarial) == ""
    assert count_answer_blocks(format_answer("1") * 3) == 3
