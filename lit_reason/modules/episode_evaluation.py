"""Validation and test on episodes: with ``model.episodes`` set, each held-out problem is played as
the same episode training plays (same environment, turns and limits), on the validation engine
(greedy by default, ``val_num_samples`` episodes per problem).

Logged: ``{prefix}/accuracy`` (the episode's reward reaches 1: the final turn's, under
``reward: last``), ``{prefix}/first_turn_accuracy`` (the first turn's reward reaches 1: what the
model gets right before any feedback), ``{prefix}/reward`` and ``{prefix}/first_turn_reward``
(means), ``{prefix}/turns_mean``, ``{prefix}/mean_length`` (the model's own tokens per episode),
``{prefix}/pass@k`` for k > 1, and the per-group accuracy on the final turn.
"""

from __future__ import annotations

from typing import Any

import torch

from lit_reason.rollout_step.episodes import Episode, Episodes, episode_rollout
from lit_reason.tasks.metrics import problem_groups


def first_turn_reward(episode: Episode) -> float:
    """The reward the environment gave the first assistant turn (0 when it gave none)."""
    first = episode.rewards[0] if episode.rewards else None
    return 0.0 if first is None or episode.error else float(first)


def episode_accuracies(episodes: list[Episode], rewards: list[float]) -> dict[str, float]:
    """The per-batch means of what validation logs (everything but pass@k and the groups)."""
    n = max(len(episodes), 1)
    first = [first_turn_reward(e) for e in episodes]
    return {
        "accuracy": sum(r >= 1.0 for r in rewards) / n,
        "first_turn_accuracy": sum(r >= 1.0 for r in first) / n,
        "reward": sum(rewards) / n,
        "first_turn_reward": sum(first) / n,
        "turns_mean": sum(len(e.turns) for e in episodes) / n,
        "mean_length": sum(sum(e.sampled) for e in episodes) / n,
    }


def evaluate_episodes(module: Any, step: Episodes, batch: list[Any], prefix: str) -> dict[str, Any]:
    """``validation_step`` / ``test_step`` of a module trained on episodes (see the module docstring)."""
    k = module.hparams.val_num_samples
    generator = module.sampling_generator(salt=1) if module.val_sampling.temperature > 0 else None
    problems = [p for p in batch for _ in range(k)]
    episodes, rewards, seconds = step.play(module, problems, module.val_engine, generator)
    bs = len(batch)
    for name, value in episode_accuracies(episodes, rewards).items():
        module.log(f"{prefix}/{name}", value, prog_bar=name == "accuracy", batch_size=bs, sync_dist=True)
    correct = [float(r >= 1.0) for r in rewards]
    if k > 1:
        per_problem = torch.tensor(correct).reshape(bs, k)
        module.log(f"{prefix}/pass@{k}", float((per_problem.sum(-1) > 0).float().mean()), batch_size=bs, sync_dist=True)
    if module.val_accuracy_by_group is not None:
        module.val_accuracy_by_group.update(correct, [problem_groups(getattr(p, "metadata", None)) for p in problems])
    rollout = episode_rollout(episodes, module.tokenizer.pad_token_id, seconds, module.device)
    return {"rollout": rollout, "problems": problems, "scores": rewards}
