"""The verifiers (0.4, ``verifiers.v1``) adapter: a small taskset built here (no hub, no network)
with async rewards, a trace stop and a toolset; its tasks as problems scored by the task's own
rewards, and played as episodes whose tool calls reach the toolset in process."""

from __future__ import annotations

import lightning as L
import pytest

vf = pytest.importorskip("verifiers.v1")

from datamodules import VerifiersDataModule  # noqa: E402
from lit_reason.modules import GRPO  # noqa: E402
from lit_reason.rollout_step.episodes import Episode, EpisodeOptions, play_episodes  # noqa: E402
from lit_reason.tasks.environment import resolve_environment  # noqa: E402
from lit_reason.tasks.turns import TurnWrapper  # noqa: E402
from lit_reason.tasks.verifiers_env import VerifiersProblem, load_taskset, taskset_problems  # noqa: E402
from tests.test_episodes import ScriptedEngine  # noqa: E402

TASKSET = "tests.test_verifiers_env:SumTaskset"


class SumData(vf.TaskData):
    answer: str = ""


class SumTask(vf.Task[SumData]):
    """Reward: 0.5 for the exact answer, 0.25 for a short reply, 0.25 for having used a tool."""

    @vf.reward(weight=0.5)
    async def correct(self, task, trace) -> float:
        return float(trace.last_reply == task.answer)

    @vf.reward(weight=0.25)
    async def brief(self, trace) -> float:
        return float(len(trace.last_reply) <= 3)

    @vf.reward(weight=0.25)
    async def used_tool(self, trace) -> float:
        return float(len(trace.tool_messages) > 0)

    @vf.stop
    async def gave_up(self, trace: vf.Trace) -> bool:
        return "give up" in trace.last_reply


class Adder(vf.Toolset[vf.ToolsetConfig]):
    @vf.tool
    async def add(self, a: int, b: int) -> int:
        """Add two integers."""
        return a + b


class SumTaskset(vf.Taskset[SumTask]):
    def load(self):
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]:
            yield SumTask(SumData(prompt=f"What is {a}+{b}?", answer=str(a + b), system_prompt="Answer with a number."))

    @classmethod
    def toolsets(cls, config):
        return [Adder(vf.ToolsetConfig())]


def problems():
    return taskset_problems(load_taskset(TASKSET))


def test_tasks_are_problems_scored_by_the_tasks_own_weighted_async_rewards():
    first = problems()[0]
    assert first.prompt == [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "What is 1+2?"}]
    assert first.answer == "3" and len(problems()) == 4
    assert first.score("3") == 0.75  # correct 0.5 + brief 0.25, no tool used
    assert first.score("4") == 0.25  # brief only
    assert first.score("the sum is 3") == 0.0


class SyncReward(SumTask):
    @vf.reward
    def plain(self, trace) -> float:
        return 1.0


class SandboxReward(SumTask):
    @vf.reward
    async def tests_pass(self, trace, runtime) -> float:
        return 1.0


@pytest.mark.parametrize("task,message", [
    (SyncReward(SumData(prompt="x")), "'plain' must be 'async def'"),
    (SandboxReward(SumData(prompt="x")), "'tests_pass' needs a runtime"),
    (SumTask(SumData(prompt="x"), vf.TaskConfig(judges=[vf.JudgeConfig(id="reference")])), "judges \\(1\\) call a model"),
    (SumTask(SumData(prompt=None)), "has no prompt"),
])
def test_what_cannot_run_here_is_one_line_before_training(task, message):
    with pytest.raises(ValueError, match=message) as err:
        VerifiersProblem(task)
    assert "\n" not in str(err.value)


def test_summed_turn_rewards_are_refused_for_verifiers_episodes():
    with pytest.raises(ValueError, match="use reward: last"):
        GRPO(model="tiny", num_generations=2, episodes={"environment": "verifiers", "reward": "sum"})


def play(problem, turns, max_turns=4):
    tok = GRPO(model="tiny", num_generations=2).tokenizer
    env = resolve_environment("verifiers")(problem)
    prompt = env.reset()
    episode = Episode(env, tok(tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                               add_special_tokens=False)["input_ids"])
    play_episodes([episode], ScriptedEngine(tok, turns), tok, [TurnWrapper(tok, True)], EpisodeOptions(max_turns=max_turns),
                  None, "cpu")
    return prompt, episode, tok.decode(episode.ids)


def test_an_episode_calls_the_toolset_in_process_and_the_trace_carries_the_tool_use_into_the_reward():
    call = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    prompt, episode, text = play(problems()[0], [call, "3"])
    # the schema the model is shown is MCP's, as verifiers serves the tool
    assert '{"name": "add", "description": "Add two integers."' in prompt[0]["content"]
    assert '"a": {"title": "A", "type": "integer"}' in prompt[0]["content"]
    assert "<|im_start|>tool\n3<|im_end|>" in text  # the toolset's answer is the next turn
    # after the call: the tool was used (0.25), the reply is the call (neither brief nor correct); then all three
    assert episode.rewards == [0.25, 1.0] and episode.done and not episode.truncated
    trace = episode.env.trace
    assert [m.role for m in trace.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert trace.messages[2].tool_calls[0].name == "add" and trace.num_turns == 2


def test_tool_errors_are_observations_and_a_trace_stop_ends_the_episode():
    bad = '<tool_call>{"name": "add", "arguments": {"a": "one"}}</tool_call>'
    unknown = '<tool_call>{"name": "mul", "arguments": {}}</tool_call> give up'
    _, episode, text = play(problems()[1], [bad, unknown, "7"])
    assert "<|im_start|>tool\nerror: ToolError: " in text  # MCP's argument validation, as the model's observation
    trace = episode.env.trace
    assert len(episode.turns) == 2 and episode.done and trace.stop_condition == "gave_up"  # the "7" never played
    assert "unknown tool 'mul'" in trace.tool_messages[-1].content
    assert episode.env.calls == 2


def test_a_plain_problem_is_refused_by_the_verifiers_environment_in_one_line():
    from lit_reason.tasks.problem import TextProblem

    with pytest.raises(ValueError, match="use data: VerifiersDataModule"):
        resolve_environment("verifiers")(TextProblem("x", "y", lambda c: 0.0))


class Scores(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.outputs = outputs


@pytest.mark.parametrize("episodes", [None, {"environment": "verifiers", "max_turns": 2}])
def test_grpo_trains_on_a_verifiers_taskset_single_turn_and_as_episodes(episodes):
    L.seed_everything(0)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=2, lr=1e-2, max_prompt_length=2048, episodes=episodes)
    data, seen = VerifiersDataModule(TASKSET, val_size=1, batch_size=2), Scores()
    trainer = L.Trainer(max_steps=1, limit_val_batches=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[seen])
    trainer.fit(module, data)
    assert trainer.global_step == 1 and "val/accuracy" in trainer.callback_metrics
    out = seen.outputs
    assert all(isinstance(p, VerifiersProblem) for p in out["problems"]) and len(out["scores"]) == 4
    if episodes is None:  # the task's own rewards scored each completion
        assert out["scores"] == [p.score(t) for p, t in zip(out["problems"], out["rollout"].texts)]
    else:
        assert "episodes/turns_mean" in trainer.callback_metrics and out["rollout"].context_mask.sum() > 0


def test_the_docs_yaml_trains_one_step_through_the_cli(tmp_path, monkeypatch):
    """docs/episodes.md's verifiers YAML, with this file's taskset in place of my_package's."""
    import re
    from pathlib import Path

    from lit_reason.app.cli import main

    doc = (Path(__file__).parent.parent / "docs" / "episodes.md").read_text()
    block = re.search(r"```yaml\n(data:\n  class_path: VerifiersDataModule.*?)```", doc, re.S).group(1)
    config = tmp_path / "verifiers.yaml"
    config.write_text(block.replace("my_package.tasks:SumTaskset", TASKSET))
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(config), "--trainer.max_steps=1", "--trainer.logger=false",
          "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
          "--trainer.num_sanity_val_steps=0", "--trainer.limit_val_batches=1", "--trainer.enable_model_summary=false",
          f"--trainer.default_root_dir={tmp_path}"])
