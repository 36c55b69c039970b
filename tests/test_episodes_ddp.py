"""Episodes under DDP (gloo, 2 CPU processes): each rank plays its own problems' episodes, the
weights stay identical across ranks after every step, and the logged episode metrics are the mean
of the ranks' own values (the environment here makes the ranks' episodes differ in length)."""

from __future__ import annotations

import json
import pickle

import lightning as L
import pytest
import torch
import torch.distributed as dist

from datamodules.base import ProblemDataModule, ProblemDataset
from lit_reason.modules import GRPO
from lit_reason.tasks.environment import Observation
from lit_reason.tasks.problem import TextProblem


class RankTurns:
    """An episode of 1 + rank turns (so the ranks' turns_mean differ); each turn is rewarded by the
    share of distinct characters in it (so rewards differ within a group and the policy moves)."""

    def __init__(self, problem):
        self.problem, self.turn = problem, 0
        self.turns = 1 + (dist.get_rank() if dist.is_initialized() else 0)

    def reset(self):
        return self.problem.prompt

    def step(self, text):
        self.turn += 1
        reward = len(set(text)) / (len(text) + 1)
        return Observation([{"role": "user", "content": "Again."}], reward=reward, done=self.turn >= self.turns)


class Prompts(ProblemDataModule):
    def train_dataset(self):
        return ProblemDataset.from_items([TextProblem(f"Say something about {i}.", str(i), lambda c: 0.0)
                                          for i in range(32)])


class Record(L.Callback):
    """Per rank and step: the problems it played, its own episode turns and what was logged; the
    parameters at the end."""

    def __init__(self, path):
        self.path, self.steps = path, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({"answers": sorted(p.answer for p in outputs["problems"]),
                           "turns": float(outputs["rollout"].extras["turns"].float().mean()),
                           "logged_turns": float(trainer.callback_metrics["episodes/turns_mean"]),
                           "logged_reward": float(trainer.callback_metrics["episodes/reward_mean"]),
                           "reward": sum(outputs["scores"]) / len(outputs["scores"])})

    def on_train_end(self, trainer, pl_module):
        rank = trainer.global_rank
        (self.path / f"steps.rank{rank}.json").write_text(json.dumps(self.steps))
        torch.save(torch.cat([p.detach().flatten() for p in pl_module.policy.parameters()]), self.path / f"params.rank{rank}")


def test_the_episode_step_pickles_with_its_environment_arguments():
    """ddp_spawn pickles the module, its rollout step with it."""
    module = GRPO(model="tiny", num_generations=2, episodes={"environment": "retry", "environment_args": {"attempts": 5}})
    step = pickle.loads(pickle.dumps(module.rollout_step))
    assert step.make_env(TextProblem("p", "a", lambda c: 0.0)).attempts == 5


@pytest.mark.integration
def test_ddp_ranks_play_their_own_episodes_keep_identical_weights_and_reduce_episode_metrics(tmp_path):
    L.seed_everything(0)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4, lr=1e-2, prompt_format="plain", sampling_seed=0,
                  episodes={"environment": "tests.test_episodes_ddp:RankTurns", "max_turns": 3})
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Record(tmp_path)])
    trainer.fit(module, Prompts(batch_size=2))
    ranks = [json.loads((tmp_path / f"steps.rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    for a, b in zip(*ranks):
        assert not set(a["answers"]) & set(b["answers"])  # each rank played its own problems
        assert (a["turns"], b["turns"]) == (1.0, 2.0)  # rank r's episodes last 1 + r turns
        assert a["logged_turns"] == b["logged_turns"] == pytest.approx(1.5)  # the mean over ranks
        assert a["reward"] != b["reward"]
        assert a["logged_reward"] == b["logged_reward"] == pytest.approx((a["reward"] + b["reward"]) / 2)
    p0, p1 = (torch.load(tmp_path / f"params.rank{r}") for r in range(2))
    torch.testing.assert_close(p0, p1, rtol=0, atol=0)
    initial = torch.cat([p.detach().flatten() for p in GRPO(model="tiny").policy.parameters()])
    assert not torch.allclose(p0, initial)  # it trained
