"""EnigmataDataModule: selection, Mix-Training weights, eval/train disjointness, sharding, grouped
metrics, curriculum state, and the YAML strategies.

Most tests swap the registry for three tiny toy tasks with known, small instance spaces (so
collisions with the eval set really happen and counts can be computed by hand); the tests at the
bottom run on the real registry.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from datamodules.base import prompt_hash
from datamodules.enigmata import base
from datamodules.enigmata.base import Task
from datamodules.enigmata.datamodule import EnigmataDataModule, Mix, mix_weights
from lit_reason.tasks.metrics import GroupedAccuracy, problem_groups

ROOT = Path(__file__).resolve().parents[2]


class ToyAdd(Task):
    """a + b with a, b in [0, hi]: (hi + 1)^2 instances."""

    name, category = "toy_add", "Arithmetic"
    presets = {"easy": {"hi": 3}, "medium": {"hi": 9}, "hard": {"hi": 99}}

    def build(self, rng, hi):
        a, b = rng.randint(0, hi), rng.randint(0, hi)
        return f"What is {a} + {b}?", str(a + b), {"a": a, "b": b}

    def verify(self, answer, metadata):
        return answer.strip() == str(metadata["a"] + metadata["b"])


class ToyReverse(Task):
    name, category = "toy_reverse", "Crypto"
    presets = {"easy": {"length": 3}, "medium": {"length": 5}, "hard": {"length": 8}}

    def build(self, rng, length):
        word = "".join(rng.choice("abcdefgh") for _ in range(length))
        return f"Reverse the word {word}.", word[::-1], {"word": word}

    def verify(self, answer, metadata):
        return answer.strip() == metadata["word"][::-1]


class ToyParity(Task):
    name, category = "toy_parity", "Logic"
    presets = {"easy": {"bits": 4}, "medium": {"bits": 8}, "hard": {"bits": 16}}

    def build(self, rng, bits):
        word = "".join(rng.choice("01") for _ in range(bits))
        return f"Is the number of ones in {word} even or odd?", "even" if word.count("1") % 2 == 0 else "odd", {"word": word}

    def verify(self, answer, metadata):
        return answer.strip() == ("even" if metadata["word"].count("1") % 2 == 0 else "odd")


class ToyParity2(ToyParity):
    name = "toy_parity2"


TOYS = (ToyAdd, ToyReverse, ToyParity, ToyParity2)


@pytest.fixture
def toys():
    """Replace the task registry by the toy tasks for one test (restored afterwards)."""
    saved = dict(base.TASKS)
    base.TASKS.clear()
    base.TASKS.update({cls.name: cls() for cls in TOYS})
    try:
        yield base.TASKS
    finally:
        base.TASKS.clear()
        base.TASKS.update(saved)


def prompts(dm: EnigmataDataModule, n: int) -> list[str]:
    ds = dm.train_dataset()
    return [ds[i].prompt for i in range(n)]


# ---- selection and weights ------------------------------------------------------------------
def test_selection_by_tasks_and_categories(toys):
    assert EnigmataDataModule(eval_per_task=0).universe == ["toy_add", "toy_reverse", "toy_parity", "toy_parity2"]
    dm = EnigmataDataModule(tasks=["toy_add"], categories=["Logic"], eval_per_task=0)
    assert dm.universe == ["toy_add", "toy_parity", "toy_parity2"]
    assert set(dm.active_tasks) == set(dm.universe)


def test_mix_weights_by_hand(toys):
    names = ["toy_add", "toy_reverse", "toy_parity", "toy_parity2"]
    # task balance: base 1 each, times category weight, times task weight
    assert mix_weights(names, {"Logic": 2, "toy_add": 3}, "task") == {"toy_add": 3.0, "toy_reverse": 1.0, "toy_parity": 2.0, "toy_parity2": 2.0}
    # category balance: the two Logic tasks share the Logic category's base 1
    assert mix_weights(names, {"Logic": 2, "toy_add": 3}, "category") == {"toy_add": 3.0, "toy_reverse": 1.0, "toy_parity": 1.0, "toy_parity2": 1.0}
    assert mix_weights(names, None, "category") == {"toy_add": 1.0, "toy_reverse": 1.0, "toy_parity": 0.5, "toy_parity2": 0.5}


def test_mix_draw_frequencies():
    mix = Mix.from_weights({"a": 3.0, "b": 1.0, "c": 0.0, "d": 4.0})
    assert mix.names == ("a", "b", "d")  # zero weight never drawn
    rng = random.Random(0)
    counts = Counter(mix.draw(rng) for _ in range(8000))
    for name, share in {"a": 3 / 8, "b": 1 / 8, "d": 4 / 8}.items():
        assert abs(counts[name] / 8000 - share) < 0.02


def test_train_stream_follows_weights(toys):
    dm = EnigmataDataModule(weights={"toy_add": 3, "toy_reverse": 1, "Logic": 0}, train_size=4000, eval_per_task=0)
    counts = Counter(dm.train_dataset()[i].task for i in range(4000))
    assert set(counts) == {"toy_add", "toy_reverse"}
    assert abs(counts["toy_add"] / 4000 - 0.75) < 0.03


# ---- determinism and disjointness -----------------------------------------------------------
def test_train_items_are_a_function_of_seed_and_index(toys):
    a = EnigmataDataModule(seed=7, eval_per_task=2, difficulty="hard")
    b = EnigmataDataModule(seed=7, eval_per_task=2, difficulty="hard")
    ds_b = b.train_dataset()
    assert [ds_b[i].prompt for i in reversed(range(40))][::-1] == prompts(a, 40)  # order of access is irrelevant
    other = prompts(EnigmataDataModule(seed=8, eval_per_task=2, difficulty="hard"), 40)
    assert sum(x != y for x, y in zip(other, prompts(a, 40))) > 30


def test_eval_set_is_fixed_distinct_and_uses_negative_seeds(toys):
    dm = EnigmataDataModule(eval_per_task=5, seed=1)
    items = dm.eval_items()
    assert len(items) == 4 * 3 * 5
    assert all(p.metadata["seed"] < 0 for p in items)
    assert len({p.prompt for p in items}) == len(items)
    assert [p.prompt for p in EnigmataDataModule(eval_per_task=5, seed=2).eval_items()] == [p.prompt for p in items]
    cells = Counter((p.task, p.difficulty) for p in items)
    assert set(cells.values()) == {5}


def test_train_never_yields_an_eval_prompt(toys):
    # toy_add easy has 16 instances; the eval set takes 8 of them, so about half the train draws collide
    dm = EnigmataDataModule(tasks=["toy_add"], difficulty="easy", eval_per_task=8, eval_difficulties=["easy"], train_size=3000)
    eval_prompts = {p.prompt for p in dm.eval_items()}
    assert len(eval_prompts) == 8
    train = {dm.train_dataset()[i].prompt for i in range(3000)}
    assert not train & eval_prompts
    everything = {(a, b) for a in range(4) for b in range(4)}
    sums = {(p.metadata["a"], p.metadata["b"]) for p in [*dm.eval_items(), *(dm.train_dataset()[i] for i in range(3000))]}
    assert sums == everything  # the other 8 instances are all still reachable
    assert dm.train_stream().redraws > 500  # the skip really happened


def test_train_eval_hash_check_over_mixed_difficulties(toys):
    dm = EnigmataDataModule(difficulty={"default": "easy", "Crypto": "medium"}, eval_per_task=6, train_size=3000)
    hashes = {prompt_hash(p.prompt) for p in dm.eval_items()}
    ds = dm.train_dataset()
    assert all(prompt_hash(ds[i].prompt) not in hashes for i in range(3000))


def test_exhausted_space_is_split_between_eval_and_train(toys):
    dm = EnigmataDataModule(tasks=["toy_add"], knobs={"toy_add": {"hi": 1}}, difficulty="easy", eval_per_task=8, eval_difficulties=["easy"])
    evals = {p.prompt for p in dm.eval_items()}
    assert len(evals) == 2  # a, b in {0, 1}: 4 prompts, fewer than 8 asked -> eval keeps half
    train = {dm.train_dataset()[i].prompt for i in range(20)}
    assert len(train) == 2 and not train & evals


def test_distributed_sampler_shards_are_disjoint_and_cover(toys):
    size = 64
    per_rank = []
    for rank in range(2):  # each fake rank builds its own DataModule, as a real process would
        dm = EnigmataDataModule(seed=3, train_size=size, eval_per_task=2, difficulty="hard")
        ds = dm.train_dataset()
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=11)
        per_rank.append({i: ds[i].prompt for i in sampler})
    assert len(per_rank[0]) == len(per_rank[1]) == size // 2
    assert not set(per_rank[0]) & set(per_rank[1])
    assert set(per_rank[0]) | set(per_rank[1]) == set(range(size))
    reference = EnigmataDataModule(seed=3, train_size=size, eval_per_task=2, difficulty="hard").train_dataset()
    assert all(reference[i].prompt == p for shard in per_rank for i, p in shard.items())


# ---- grouped metrics ------------------------------------------------------------------------
def test_metric_groups_and_grouped_accuracy_by_hand(toys):
    dm = EnigmataDataModule(eval_per_task=4)
    items = dm.eval_items()
    groups = dm.metric_groups()
    expected = {f"task/{t}" for t in toys} | {"category/Arithmetic", "category/Crypto", "category/Logic"}
    expected |= {"difficulty/easy", "difficulty/medium", "difficulty/hard"}
    assert set(groups) == expected
    assert all(set(problem_groups(p.metadata)) <= set(groups) for p in items)

    rng = random.Random(5)
    scores = [float(rng.random() < 0.4) for _ in items]
    metric = GroupedAccuracy(groups)
    metric.update(torch.tensor(scores), [problem_groups(p.metadata) for p in items])
    got = metric.compute()
    for key, attr in (("task", "task"), ("category", "category"), ("difficulty", "difficulty")):
        values = {getattr(p, attr) for p in items}
        for v in values:
            mine = [s for s, p in zip(scores, items) if getattr(p, attr) == v]
            assert got[f"{key}/{v}"].item() == pytest.approx(sum(mine) / len(mine))
    # one cell by hand: Logic holds 2 tasks x 3 levels x 4 items = 24 items
    logic = [s for s, p in zip(scores, items) if p.category == "Logic"]
    assert len(logic) == 24


# ---- curriculum state ------------------------------------------------------------------------
def test_difficulty_levels_and_level_up(toys):
    dm = EnigmataDataModule(difficulty={"default": "easy", "toy_add": "hard"}, eval_per_task=0, train_size=200)
    assert {t: dm.level_of(t) for t in dm.universe} == {"toy_add": "hard", "toy_reverse": "easy", "toy_parity": "easy", "toy_parity2": "easy"}
    ds = dm.train_dataset()
    before = [ds[i] for i in range(50)]
    assert all(p.difficulty == dm.level_of(p.task) for p in before)
    assert dm.level_up() is True
    assert dm.mean_level() == pytest.approx((2 + 1 + 1 + 1) / 4)
    after = [ds[i] for i in range(50)]
    assert [p.task for p in after] == [p.task for p in before]  # the draw of tasks does not depend on level
    assert all(p.difficulty == ("hard" if p.task == "toy_add" else "medium") for p in after)
    dm.set_difficulty("Logic", "hard")
    dm.set_difficulty("toy_reverse", "hard")
    assert dm.level_up() is False  # all at the top already
    dm.set_difficulty(None, "easy")
    assert dm.mean_level() == 0


def test_state_dict_round_trip_restores_items(toys):
    dm = EnigmataDataModule(eval_per_task=2, train_size=100, stages=[{"tasks": ["toy_add"], "steps": 5}, {"categories": ["Logic", "Crypto"]}])
    dm.advance_stage()
    dm.level_up("toy_parity")
    state = dm.state_dict()
    fresh = EnigmataDataModule(eval_per_task=2, train_size=100, stages=[{"tasks": ["toy_add"], "steps": 5}, {"categories": ["Logic", "Crypto"]}])
    assert prompts(fresh, 20) != prompts(dm, 20)
    fresh.load_state_dict(state)
    assert fresh.current_stage == 1 and fresh.level_of("toy_parity") == "hard"
    assert prompts(fresh, 20) == prompts(dm, 20)
    with pytest.raises(ValueError, match="stage 5"):
        fresh.load_state_dict({"stage": 5})


def test_stages_switch_tasks_and_apply_their_difficulty(toys):
    dm = EnigmataDataModule(
        eval_per_task=1,
        train_size=60,
        stages=[{"tasks": ["toy_add"], "steps": 3, "difficulty": "easy"}, {"categories": ["Logic"], "until_accuracy": 0.5, "difficulty": "hard"}, {"tasks": ["toy_reverse"]}],
    )
    assert dm.universe == ["toy_add", "toy_reverse", "toy_parity", "toy_parity2"]
    assert {p.task for p in dm.eval_items()} == set(dm.universe)
    ds = dm.train_dataset()
    assert {(ds[i].task, ds[i].difficulty) for i in range(60)} == {("toy_add", "easy")}
    assert dm.stage.steps == 3 and dm.advance_stage()
    assert {(ds[i].task, ds[i].difficulty) for i in range(60)} == {("toy_parity", "hard"), ("toy_parity2", "hard")}
    assert dm.stage.until_accuracy == 0.5 and dm.advance_stage()
    assert {ds[i].task for i in range(60)} == {"toy_reverse"}
    assert dm.advance_stage() is False and dm.current_stage == 2


def test_dataloader_yields_the_new_level_next_epoch(toys):
    for workers in (0, 1):
        dm = EnigmataDataModule(difficulty="easy", eval_per_task=0, train_size=16, batch_size=4, num_workers=workers)
        loader = dm.train_dataloader()
        first = [p.difficulty for batch in loader for p in batch]
        dm.level_up()
        second = [p.difficulty for batch in loader for p in batch]
        assert first == ["easy"] * 16 and second == ["medium"] * 16


def test_knob_overrides_apply(toys):
    dm = EnigmataDataModule(tasks=["toy_add"], knobs={"toy_add": {"hi": 1000}}, difficulty="easy", eval_per_task=0, train_size=200)
    ds = dm.train_dataset()
    assert max(max(ds[i].metadata["a"], ds[i].metadata["b"]) for i in range(200)) > 500


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tasks": ["nope"]}, "unknown task 'nope'"),
        ({"categories": ["Chess"]}, "unknown category 'Chess'"),
        ({"weights": {"toy_zzz": 1}}, "not a selected task or category"),
        ({"weights": {"toy_add": -1}}, "must be a number >= 0"),
        ({"weights": {"toy_add": 0, "toy_reverse": 0, "Logic": 0}}, "every selected task has weight 0"),
        ({"difficulty": "extreme"}, "unknown difficulty 'extreme'"),
        ({"difficulty": {"toy_add": "hard", "Geometry": "easy"}}, "'Geometry' is not a selected task"),
        ({"knobs": {"toy_add": {"size": 3}}}, "unknown knob"),
        ({"balance": "uniform"}, "balance must be"),
        ({"stages": [{"tasks": ["toy_add"], "steps": 0}]}, "steps must be an integer >= 1"),
        ({"stages": [{"tasks": ["toy_add"], "steps": 2, "until_accuracy": 0.5}]}, "either steps or until_accuracy"),
        ({"stages": [{"task": ["toy_add"]}]}, "unknown key"),
        ({"train_size": 0}, "train_size must be >= 1"),
        ({"eval_difficulties": ["medium", "expert"]}, "unknown difficulty 'expert'"),
    ],
)
def test_bad_config_gives_one_clear_error(toys, kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnigmataDataModule(eval_per_task=0, **kwargs)


# ---- the real registry ---------------------------------------------------------------------
def test_real_tasks_train_stream_is_disjoint_from_eval():
    dm = EnigmataDataModule(eval_per_task=3, train_size=2000, difficulty="easy", seed=0)
    assert dm.universe == list(base.TASKS) and dm.universe
    hashes = {prompt_hash(p.prompt) for p in dm.eval_items()}
    ds = dm.train_dataset()
    tasks = set()
    for i in range(2000):
        item = ds[i]
        tasks.add(item.task)
        assert prompt_hash(item.prompt) not in hashes
    assert tasks == set(base.TASKS)


def _data_section(config: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "configs" / "enigmata" / config).read_text())


@pytest.mark.parametrize("config", ["mixed.yaml", "multistage.yaml"])
def test_yaml_strategies_instantiate_and_yield_batches(config):
    from jsonargparse import ArgumentParser

    data = _data_section(config)["data"]
    assert data["class_path"].endswith("EnigmataDataModule")
    init = dict(data["init_args"], eval_per_task=1, train_size=8)  # keep the test small
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(EnigmataDataModule, "data")
    cfg = parser.parse_object({"data": init})
    dm = parser.instantiate(cfg)["data"]
    assert isinstance(dm, EnigmataDataModule)
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == dm.batch_size
    assert all(p.score(p.answer) == 1.0 for p in batch)
    assert len(dm.val_dataset()) == len(dm.universe) * len(dm.eval_difficulties)
    if config == "multistage.yaml":
        assert dm.num_stages > 1
        seen = []
        while True:
            seen.append(set(dm.active_tasks))
            if not dm.advance_stage():
                break
        assert set().union(*seen) == set(dm.universe)
    else:
        assert dm.num_stages == 1 and set(dm.universe) == set(base.TASKS)



def test_small_instance_spaces_leave_training_puzzles():
    """twiddle easy has ~16 boards: the eval split keeps half of what it sees, training draws the rest."""
    from datamodules.base import prompt_hash
    from datamodules.enigmata.datamodule import EnigmataDataModule, build_eval_items

    evals = build_eval_items(["twiddle"], ["easy"], 50, {})
    assert 1 <= len(evals) < 16
    dm = EnigmataDataModule(tasks=["twiddle"], difficulty="easy", train_size=64, eval_per_task=50,
                            eval_difficulties=["easy"], batch_size=4)
    dm.setup("fit")
    eval_hashes = {prompt_hash(p.prompt) for p in dm.val_dataset()}
    train = [dm.train_dataset()[i] for i in range(64)]
    assert not eval_hashes & {prompt_hash(p.prompt) for p in train}


# ---- compact prompts -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sudoku2", "sudoku", "magic_square"])
def test_compact_prompt_is_the_same_instance_without_rule_text(name):
    task = base.TASKS[name]
    for seed in range(20):
        full, compact = task.generate(seed, "medium"), task.generate(seed, "medium", "compact")
        assert (compact.answer, compact.metadata) == (full.answer, full.metadata)
        lines = compact.prompt.splitlines()
        assert lines[0] == name and compact.prompt.endswith("\n")
        # The grid rows in the compact prompt are exactly the rows the full prompt shows.
        assert "\n".join(lines[1:]) in full.prompt
        assert len(compact.prompt) < len(full.prompt) / 3
        assert compact.score(compact.answer) == 1.0


def test_compact_prompt_reaches_both_splits_and_keeps_them_disjoint():
    dm = EnigmataDataModule(tasks=["sudoku2"], prompt_style="compact", difficulty="medium",
                            eval_difficulties=["medium"], eval_per_task=64, train_size=500)
    eval_prompts = {p.prompt for p in dm.eval_items()}
    train_prompts = [dm.train_dataset()[i].prompt for i in range(500)]
    assert len(eval_prompts) == 64
    assert all(p.startswith("sudoku2\n") for p in eval_prompts | set(train_prompts))
    assert not eval_prompts & set(train_prompts)


def test_compact_prompt_needs_tasks_that_have_one():
    assert {"sudoku", "sudoku2", "magic_square"} <= set(base.compact_tasks())
    with pytest.raises(ValueError, match="maze have no compact prompt; use prompt_style full"):
        EnigmataDataModule(tasks=["sudoku2", "maze"], prompt_style="compact", eval_per_task=0)
    with pytest.raises(ValueError, match="unknown style 'short'"):
        EnigmataDataModule(tasks=["sudoku2"], prompt_style="short", eval_per_task=0)
    with pytest.raises(ValueError, match="'maze' has no compact prompt"):
        base.TASKS["maze"].generate(0, "easy", "compact")
