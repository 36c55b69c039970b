"""docs/episodes.md's worked episode is what the code produces: SmolLM2 on an Enigmata Countdown
puzzle as a two-attempt retry episode, token by token (regenerate the table with
``PYTHONPATH=$PWD python tests/test_episodes_doc.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).parent.parent / "docs" / "episodes.md"


def worked_episode() -> str:
    import datamodules.enigmata  # noqa: F401 - registers the tasks
    from datamodules.enigmata.base import TASKS
    from lit_reason.modules import GRPO
    from lit_reason.rollout_step.episode_view import episode_table

    torch.manual_seed(0)
    module = GRPO(model="smollm2-135m-instruct", num_generations=2, max_new_tokens=32, temperature=0.7, sampling_seed=0,
                  max_prompt_length=1024, episodes={"environment": "retry", "environment_args": {"attempts": 2},
                                                    "max_turns": 2})
    step = module.rollout_step(module, [TASKS["countdown"].generate(3, "easy")])
    return episode_table(step.rollout, 0, module.tokenizer)


def rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table.splitlines()[2:]]


@pytest.mark.real_model
def test_the_docs_worked_episode_is_what_the_code_produces():
    text = DOC.read_text()
    documented = text[text.index("| pos |"):]
    documented = documented[: documented.index("\n\n")] if "\n\n" in documented else documented
    produced, shown = rows(worked_episode()), rows(documented)
    assert [r[:4] for r in produced] == [r[:4] for r in shown]
    for a, b in zip(produced, shown):
        assert (a[4] == b[4] == "") or abs(float(a[4]) - float(b[4])) < 1e-3


if __name__ == "__main__":
    print(worked_episode())


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_docs_yaml_builds_a_module_and_its_environment_class_plays_episodes(monkeypatch):
    import sys
    import types

    import yaml

    from lit_reason.modules import GRPO
    from lit_reason.rollout_step.episodes import Episodes
    from lit_reason.tasks.problem import TextProblem

    config = blocks("yaml")[0]  # the first: the episodes example (the verifiers one: tests/test_verifiers_env.py)
    module = GRPO(**{**yaml.safe_load(config)["model"]["init_args"], "num_generations": 2})
    assert isinstance(module.rollout_step, Episodes) and module.rollout_step.options.max_episode_tokens == 256
    games = types.ModuleType("my_package.games")
    exec(blocks("python")[0], games.__dict__)  # noqa: S102 - the doc's own example
    monkeypatch.setitem(sys.modules, "my_package", types.ModuleType("my_package"))
    monkeypatch.setitem(sys.modules, "my_package.games", games)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4, sampling_seed=0,
                  episodes={"environment": "my_package.games:GuessTheNumber", "max_turns": 4})
    step = module.rollout_step(module, [TextProblem("unused", "7", lambda c: 0.0)])
    assert step.metrics["episodes/failed"] == 0 and (step.rollout.extras["turns"] >= 1).all()
    env = games.GuessTheNumber(None)
    assert env.step("5").messages == [{"role": "user", "content": "No, higher."}] and env.step("7").reward == 1.0
