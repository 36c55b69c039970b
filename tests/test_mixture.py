"""MixtureDataModule: the weighted source draw, eval concatenation, name clashes, and the
curriculum forwarded to the sources that own each task."""

from __future__ import annotations

import pytest

from datamodules.enigmata.datamodule import EnigmataDataModule
from datamodules.mixture import MixtureDataModule
from datamodules.toy import ToyDataModule


def toys():
    return [ToyDataModule(task="char_fill", train_size=64, val_size=3), ToyDataModule(task="add", train_size=64, val_size=5)]


def test_sources_are_drawn_by_weight_and_items_come_from_the_sources_own_streams():
    a, b = toys()
    mix = MixtureDataModule(sources=[a, b], weights=[3, 1], train_size=4000, seed=1)
    train = mix.train_dataset()
    items = [train[i] for i in range(len(train))]
    pool_a = {a.train_dataset()[i].prompt for i in range(64)}
    pool_b = {b.train_dataset()[i].prompt for i in range(64)}
    from_a = sum(p.prompt in pool_a for p in items)
    assert all(p.prompt in pool_a or p.prompt in pool_b for p in items)
    assert abs(from_a / 4000 - 0.75) < 0.03  # binomial sd ~0.007
    again = MixtureDataModule(sources=toys(), weights=[3, 1], train_size=4000, seed=1).train_dataset()
    assert [again[i].prompt for i in range(50)] == [p.prompt for p in items[:50]]


def test_validation_is_every_source_eval_set():
    a, b = toys()
    val = MixtureDataModule(sources=[a, b]).val_dataset()
    assert [val[i].prompt for i in range(len(val))] == [a.val_dataset()[i].prompt for i in range(3)] + \
        [b.val_dataset()[i].prompt for i in range(5)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(sources=[]), "give at least one DataModule"),
    (dict(weights=[1.0]), "1 weights for 2 sources"),
    (dict(weights=[0, 0]), "positive sum"),
    (dict(train_size=0), "train_size"),
])
def test_bad_settings_fail_in_one_line(kwargs, message):
    args = {"sources": toys(), **kwargs}
    with pytest.raises(ValueError, match=message):
        MixtureDataModule(**args)


def test_multi_stage_sources_are_refused():
    staged = EnigmataDataModule(stages=[{"tasks": ["game24"], "steps": 2}, {"tasks": ["countdown"]}], eval_per_task=0)
    with pytest.raises(ValueError, match="multi-stage source cannot be mixed"):
        MixtureDataModule(sources=[staged, ToyDataModule()])


rg = pytest.importorskip("reasoning_gym", reason="reasoning-gym is a test dependency")


def test_same_task_names_need_a_prefix_and_the_curriculum_reaches_each_owner():
    from datamodules.reasoning_gym import ReasoningGymDataModule

    enigmata = EnigmataDataModule(tasks=["maze", "game24"], difficulty="easy", eval_per_task=1)
    with pytest.raises(ValueError, match="task 'maze' is in two sources.*name_prefix"):
        MixtureDataModule(sources=[enigmata, ReasoningGymDataModule(tasks=["maze"], difficulty=0, eval_per_task=1)])
    gym = ReasoningGymDataModule(tasks=["maze", "chain_sum"], difficulty=0, eval_per_task=1, name_prefix="rg/")
    mix = MixtureDataModule(sources=[enigmata, gym])
    assert mix.active_tasks == ["game24", "maze", "rg/maze", "rg/chain_sum"]
    assert mix.level_up("rg/maze") and gym.level_of("maze") == 1 and enigmata.level_of("maze") == "easy"
    assert mix.level_up() and enigmata.level_of("game24") == "medium" and gym.level_of("chain_sum") == 1
    # enigmata tasks at level 1 (medium), gym at 2 and 1: weighted by task count
    assert mix.mean_level() == pytest.approx((1 + 1 + 2 + 1) / 4)
    state = mix.state_dict()
    fresh = MixtureDataModule(sources=[EnigmataDataModule(tasks=["maze", "game24"], difficulty="easy", eval_per_task=1),
                                       ReasoningGymDataModule(tasks=["maze", "chain_sum"], difficulty=0, eval_per_task=1, name_prefix="rg/")])
    fresh.load_state_dict(state)
    assert [fresh.level_of(t) for t in fresh.active_tasks] == ["medium", "medium", 2, 1]
    groups = mix.metric_groups()
    assert "task/maze" in groups and "task/rg/maze" in groups and "category/rg/games" in groups
