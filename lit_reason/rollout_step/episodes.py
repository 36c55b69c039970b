"""Multi-turn episodes as a rollout step: the model and an environment take turns, and the module
trains on exactly the tokens that were sampled.

Each row of the rollout is one episode (G per problem, advantages per episode as usual). Its
``completion_ids`` are everything after the first prompt: the sampled tokens of every assistant
turn with the tokenised environment turns between them (:class:`~lit_reason.tasks.turns.TurnWrapper`),
appended as they happen, never re-rendered. ``completion_mask`` covers only the sampled tokens (the
loss); ``extras["episode_mask"]`` covers every token of the episode (the attention of the training
forward: ``Rollout.context_mask``); ``logprobs`` are the sampler's at the sampled tokens. So the
training forward over prompt + episode scores the same tokens the sampler drew, in the same
context, and the GRPO step runs unchanged.

Each turn samples every live episode in one batch with the module's engine, its prompt being the
episode so far: the built-in engine keeps each episode's KV cache between turns and prefills only
what was appended (:meth:`~lit_reason.rollout.kv_cache.RolloutEngine.generate_turn`); vLLM gets
the episode's token ids as its prompt and finds the earlier turns in its prefix cache. Limits:
``max_turns`` assistant turns and ``max_episode_tokens`` tokens after the prompt; an episode over
budget is cut at the budget, flagged ``truncated`` and counted. An environment that raises ends
its episode with reward 0 (warned once, counted); a step in which every episode failed stops the run.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from lit_reason.rollout import Rollout
from lit_reason.rollout.contract import left_padded
from lit_reason.rollout_step.contract import ScoredRollout
from lit_reason.rollout_step.dynamic_sampling import DynamicSampling
from lit_reason.rollout_step.sampling import SampleNow
from lit_reason.tasks.environment import EPISODE_REWARDS, Observation, episode_reward, resolve_environment
from lit_reason.tasks.prompts import uses_chat_template
from lit_reason.tasks.rewards import score_sources
from lit_reason.tasks.turns import TurnWrapper
from lit_reason.utils.config_dataclass import parse_config


@dataclass
class EpisodeOptions:
    """``model.episodes``: which environment each problem becomes and the limits of an episode.

    Args:
        environment: ``single_turn`` | ``retry`` | ``tools`` | ``trl`` (a reference-trainer
            ``environment_factory`` class, ``environment_args: {factory: package.module:Class}``) |
            ``verifiers`` (the tasks of ``data: VerifiersDataModule``) or ``package.module:Class``
            (called as ``Class(problem, **environment_args)``).
        environment_args: keyword arguments of the environment (e.g. ``{attempts: 3}`` for retry).
        max_turns: assistant turns per episode at most (each samples up to ``max_new_tokens``).
        max_episode_tokens: tokens after the prompt (sampled + environment) at most.
        reward: ``last`` (the last reward the environment gave) or ``sum`` (of every turn's).
    """

    environment: str = "single_turn"
    environment_args: dict | None = None
    max_turns: int = 3
    max_episode_tokens: int = 1024
    reward: str = "last"

    def problem(self) -> str | None:
        """The first bad value, in one line (checked with the module's settings, not in
        ``__post_init__``: the CLI builds this dataclass itself and would bury the line in a traceback)."""
        if self.max_turns < 1:
            return f"model.episodes.max_turns must be >= 1, got {self.max_turns}"
        if self.max_episode_tokens < 1:
            return f"model.episodes.max_episode_tokens must be >= 1, got {self.max_episode_tokens}"
        if self.reward not in EPISODE_REWARDS:
            return f"model.episodes.reward={self.reward!r}: choose one of {EPISODE_REWARDS}"
        if self.environment == "verifiers" and self.reward == "sum":  # lit_reason.tasks.verifiers_env
            return ("model.episodes.reward=sum with environment: verifiers would add up the task's score of the trace "
                    "at every turn: use reward: last")
        return None


@dataclass
class Episode:
    """One episode as it is played: the token lists grow turn by turn."""

    env: Any
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)  # after the prompt: sampled and environment tokens
    sampled: list[int] = field(default_factory=list)  # 1 where ids[i] was sampled by the model
    logps: list[float] = field(default_factory=list)  # the sampler's log-prob there (0 elsewhere)
    rewards: list[float | None] = field(default_factory=list)
    turns: list[str] = field(default_factory=list)  # the text of each assistant turn
    done: bool = False
    truncated: bool = False  # cut at max_episode_tokens, or max_turns reached before the environment ended it
    error: str | None = None  # the environment raised (reward 0)

    def append(self, ids: list[int], logps: list[float] | None) -> None:
        self.ids += ids
        self.sampled += [1 if logps is not None else 0] * len(ids)
        self.logps += logps if logps is not None else [0.0] * len(ids)


def _right_padded(rows: list[list], value: Any, dtype: torch.dtype, device: Any) -> torch.Tensor:
    width = max(max((len(r) for r in rows), default=0), 1)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=dtype, device=device)


def play_episodes(episodes: list[Episode], engine: Any, tokenizer: Any, wrappers: list[TurnWrapper],
                  options: EpisodeOptions, generator: torch.Generator | None, device: Any) -> float:
    """Play every episode to its end, one batched engine call per turn; returns the sampling seconds."""
    seconds = 0.0
    eos_ids = set(engine.eos_ids)
    keeps_cache = getattr(engine, "keeps_turn_cache", False)
    past, cached = None, {}  # the KV cache the last turn left (built-in engine) and its episodes
    for turn in range(options.max_turns):
        live = [i for i, e in enumerate(episodes) if not e.done]
        if not live:
            break
        rows = [episodes[i].prompt_ids + episodes[i].ids for i in live]
        if keeps_cache:
            past = past.select([cached[i] for i in live]) if past is not None else None
            out, past = engine.generate_turn(rows, past, generator, device, keep=turn + 1 < options.max_turns)
            cached = {i: row for row, i in enumerate(live)}
        else:  # vLLM (its prefix cache finds the earlier turns), the static-cache engine: the whole episode
            out = engine.generate(*left_padded(rows, engine.pad_id, device), generator)
        seconds += out.seconds
        for row, i in enumerate(live):
            e = episodes[i]
            n = int(out.completion_mask[row].sum())
            tokens, logps = out.completion_ids[row, :n].tolist(), out.logprobs[row, :n].tolist()
            room = options.max_episode_tokens - len(e.ids)
            if n > room:
                tokens, logps, e.truncated = tokens[:room], logps[:room], True
            e.append(tokens, logps)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            e.turns.append(text)
            try:
                obs = e.env.step(text)
                if not isinstance(obs, Observation):
                    raise TypeError(f"step() returned {type(obs).__name__}, not an Observation")
                e.rewards.append(obs.reward)
                if obs.done or e.truncated:
                    e.done = True
                    continue
                if turn + 1 == options.max_turns:
                    e.done = e.truncated = True
                    continue
                ended_by = tokenizer.decode(tokens[-1:]) if tokens and tokens[-1] in eos_ids else None
                env_text = wrappers[i].text(obs.messages, ended_by)
            except Exception as err:  # noqa: BLE001 - an environment's bug ends its episode, never the run
                e.error, e.done = f"{type(err).__name__}: {err}", True
                continue
            env_ids = tokenizer(env_text, add_special_tokens=False)["input_ids"]
            if len(e.ids) + len(env_ids) >= options.max_episode_tokens:  # no room left for a model turn
                e.done = e.truncated = True
                continue
            e.append(env_ids, None)
    return seconds


def episode_rollout(episodes: list[Episode], pad_id: int, seconds: float, device: Any) -> Rollout:
    """The rollout of played episodes (see the module docstring for what each field holds)."""
    prompt_ids, prompt_mask = left_padded([e.prompt_ids for e in episodes], pad_id, device)
    return Rollout(
        prompt_ids, prompt_mask,
        _right_padded([e.ids for e in episodes], pad_id, torch.long, device),
        _right_padded([e.sampled for e in episodes], 0, torch.long, device),
        _right_padded([e.logps for e in episodes], 0.0, torch.float32, device),
        torch.tensor([e.truncated for e in episodes], dtype=torch.bool, device=device),
        [e.turns[-1] if e.turns else "" for e in episodes],
        seconds,
        {"episode_mask": _right_padded([[1] * len(e.ids) for e in episodes], 0, torch.long, device),
         "turns": torch.tensor([len(e.turns) for e in episodes], dtype=torch.long, device=device)},
    )


def episode_metrics(episodes: list[Episode], rewards: list[float]) -> dict[str, float]:
    """What an episode step logs: turns, the share cut or failed, the first turn's reward and the
    episode's, the share of episode tokens the environment wrote, and tool calls (malformed ones too)."""
    n = max(len(episodes), 1)
    first = [float(e.rewards[0]) if e.rewards and e.rewards[0] is not None else 0.0 for e in episodes]
    tokens = sum(len(e.ids) for e in episodes)
    return {
        "episodes/turns_mean": sum(len(e.turns) for e in episodes) / n,
        "episodes/truncated_frac": sum(e.truncated for e in episodes) / n,
        "episodes/failed": float(sum(e.error is not None for e in episodes)),
        "episodes/first_turn_reward_mean": sum(first) / n,
        "episodes/reward_mean": sum(rewards) / n,
        "episodes/environment_token_frac": (tokens - sum(sum(e.sampled) for e in episodes)) / max(tokens, 1),
        # tool-use environments count their calls (lit_reason.tasks.tools.environment.ToolUse)
        "episodes/tool_calls": float(sum(getattr(e.env, "calls", 0) for e in episodes)),
        "episodes/malformed_tool_calls": float(sum(getattr(e.env, "malformed_calls", 0) for e in episodes)),
    }


class Episodes(SampleNow):
    """``model.episodes``: G episodes per problem against ``make_env(problem)``, scored by the
    environment's episode reward (the ``correct`` source reads it; other reward sources read the
    last assistant turn)."""

    def __init__(self, options: EpisodeOptions) -> None:
        self.options = options
        maker = resolve_environment(options.environment)
        args = dict(options.environment_args or {})
        # a partial, not a lambda: the step is pickled with the module (ddp_spawn, checkpoints)
        self.make_env: Callable[[Any], Any] = functools.partial(maker, **args)
        self._wrappers: dict[bool, TurnWrapper] = {}

    def wrapper(self, tokenizer: Any, templated: bool) -> TurnWrapper:
        if templated not in self._wrappers:
            self._wrappers[templated] = TurnWrapper(tokenizer, templated)
        return self._wrappers[templated]

    def start(self, module: Any, problem: Any) -> tuple[Episode, TurnWrapper]:
        """A fresh episode of ``problem``: its environment reset and its first prompt encoded."""
        tok, fmt = module.tokenizer, module.hparams.prompt_format
        try:
            env = self.make_env(problem)
            prompt = env.reset()
            episode = Episode(env, module.encode_prompt(prompt))
            return episode, self.wrapper(tok, uses_chat_template(tok, prompt, fmt))
        except Exception as err:  # noqa: BLE001 - counted as a failed episode
            episode = Episode(None, module.encode_prompt(getattr(problem, "prompt", "")), done=True)
            episode.error = f"{type(err).__name__}: {err}"
            return episode, self.wrapper(tok, uses_chat_template(tok, getattr(problem, "prompt", ""), fmt))

    def play(self, module: Any, rows: list[Any], engine: Any, generator: torch.Generator | None
             ) -> tuple[list[Episode], list[float], float]:
        """One episode per row with ``engine`` (training's, or validation's): the played episodes, their
        rewards (0 where the environment raised) and the sampling seconds."""
        started = [self.start(module, p) for p in rows]
        episodes, wrappers = [e for e, _ in started], [w for _, w in started]
        was_training = module.policy.training
        module.policy.eval()
        try:
            seconds = play_episodes(episodes, engine, module.tokenizer, wrappers, self.options, generator, module.device)
        finally:
            module.policy.train(was_training)
        failed = [e.error for e in episodes if e.error is not None]
        if failed and len(failed) == len(episodes):
            raise RuntimeError(f"every episode of this step failed; the environment raised {failed[0]}")
        if failed:
            module._warn_once("episode_error", f"an environment raised ({failed[0]}); that episode scores 0 "
                                               "(counted in episodes/failed)")
        rewards = [0.0 if e.error else episode_reward(e.rewards, self.options.reward) for e in episodes]
        return episodes, rewards, seconds

    def sample(self, module: Any, problems: list[Any], salt: int = 0) -> ScoredRollout:
        start = time.perf_counter()
        rows = [p for p in problems for _ in range(module.hparams.num_generations)]
        episodes, rewards, seconds = self.play(module, rows, module.engine, module.sampling_generator(salt=salt))
        rollout = episode_rollout(episodes, module.tokenizer.pad_token_id, seconds, module.device)
        rollout.seconds = max(seconds, time.perf_counter() - start)
        scored = score_sources(module.reward_fns, rows, rollout.texts, rewards)
        return ScoredRollout(list(problems), rollout, scored, metrics=episode_metrics(episodes, rewards))


class DynamicEpisodes(Episodes, DynamicSampling):
    """Episodes with DAPO's dynamic sampling: refills are played as episodes too."""

    def __init__(self, options: EpisodeOptions, max_resample_batches: int) -> None:
        Episodes.__init__(self, options)
        DynamicSampling.__init__(self, max_resample_batches)


def episode_step(options: Any, dynamic_sampling: bool, max_resample_batches: int) -> Episodes:
    """The rollout step of ``model.episodes`` (a mapping or :class:`EpisodeOptions`)."""
    options = parse_config(EpisodeOptions, options, "model.episodes")
    if options.problem() is not None:
        raise ValueError(options.problem())
    return DynamicEpisodes(options, max_resample_batches) if dynamic_sampling else Episodes(options)
