"""Multi-turn episodes: the environment protocol, the turn text appended after a sampled turn, and
the rollout of an episode trained on exactly the tokens that were sampled (the training forward's
log-probs equal the sampler's at every sampled token, fp32, 1e-4, under a chat template that
changes earlier turns when the conversation is re-rendered)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import ToyDataModule
from lit_reason.modules import GRPO, HRPO, NTHR, Intuitor
from lit_reason.rollout_step.episodes import DynamicEpisodes, Episodes, EpisodeOptions
from lit_reason.rollout_step.sampling import SampleNow
from lit_reason.tasks.environment import Observation, Retry, episode_reward
from lit_reason.tasks.problem import TextProblem
from lit_reason.tasks.turns import TurnWrapper

CONFIGS = Path(__file__).parent.parent / "configs" / "episodes"

#: Qwen3-like: the generation prompt opens a think block, and an earlier assistant turn is
#: re-rendered without its reasoning, trimmed (so re-rendering never gives the sampled tokens back)
THINK_DROPPING_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' and not loop.last %}"
    "{{ '<|im_start|>assistant\n' + (m['content'].split('</think>')[-1] | trim) + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{% endif %}"
)


def problem(answer="4"):
    return TextProblem([{"role": "user", "content": "What is 2+2?"}], f"<answer>{answer}</answer>",
                       lambda c: 1.0 if answer in c else 0.0)


def tiny(**kw):
    settings = dict(model="tiny", num_generations=3, max_new_tokens=10, sampling_seed=0,
                    episodes={"environment": "retry", "environment_args": {"attempts": 3}, "max_turns": 3,
                              "max_episode_tokens": 400})
    return GRPO(**{**settings, **kw})


# ------------------------------------------------------------------ the protocol, by hand
def test_episode_reward_is_the_last_given_or_the_sum():
    assert episode_reward([0.0, None, 0.5, None], "last") == 0.5
    assert episode_reward([None, None], "last") == 0.0
    assert episode_reward([0.25, None, 0.5, 1.0], "sum") == 1.75
    assert episode_reward([float("nan"), 1.0], "sum") == 1.0
    with pytest.raises(ValueError, match="choose one of"):
        episode_reward([1.0], "max")


def test_retry_feeds_back_until_right_or_out_of_attempts():
    env = Retry(problem(), attempts=3)
    assert env.reset() == problem().prompt
    first = env.step("<answer>5</answer>")
    assert (first.reward, first.done) == (0.0, False)
    assert first.messages == [{"role": "user", "content": "That answer is not correct. Try again."}]
    assert env.step("<answer>4</answer>") == Observation([], 1.0, True)
    env.reset()
    assert [env.step("no").done for _ in range(3)] == [False, False, True]


def test_the_environment_turn_follows_the_templates_wrapper_without_repeating_the_sampled_eos():
    tok = GRPO(model="tiny", num_generations=2).tokenizer  # ChatML: <|im_start|>role\n...<|im_end|>\n
    wrap = TurnWrapper(tok, templated=True)
    obs = [{"role": "user", "content": "row 3 repeats the 2"}]
    after_eos = "\n<|im_start|>user\nrow 3 repeats the 2<|im_end|>\n<|im_start|>assistant\n"
    assert wrap.text(obs, "<|im_end|>") == after_eos
    assert wrap.text(obs, None) == "<|im_end|>" + after_eos  # a cut turn is closed first
    assert TurnWrapper(tok, templated=False).text(obs, None) == "\n\nrow 3 repeats the 2\n\n"
    with pytest.raises(ValueError, match="role"):
        wrap.text([{"content": 3}], None)


# ------------------------------------------------------------------ exactness of the trained tokens
def rerendered_ids(tok, prompt, episode_texts):
    """What a re-rendering trainer would train on: the whole conversation through the template."""
    messages = list(prompt)
    for i, text in enumerate(episode_texts):
        messages.append({"role": "assistant", "content": text})
        if i + 1 < len(episode_texts):
            messages.append({"role": "user", "content": "That answer is not correct. Try again."})
    return tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]


def check_sampled_tokens_are_trained(module, problems, min_multi_turn=2):
    """Play episodes, then: sampled and environment tokens are where the masks say; the training
    forward's log-probs equal the sampler's at every sampled token (both head paths); and the
    re-rendered conversation is NOT the episode (so the test could fail a re-rendering trainer)."""
    tok = module.tokenizer
    tok.chat_template = THINK_DROPPING_TEMPLATE
    step = module.rollout_step(module, problems)
    r = step.rollout
    loss, context = r.completion_mask.bool(), r.context_mask.bool()
    assert (loss <= context).all() and (loss.sum(-1) < context.sum(-1)).sum() >= min_multi_turn
    environment_tokens = context & ~loss
    assert (r.logprobs[environment_tokens] == 0).all()
    differs = 0
    for row in range(len(r.texts)):
        env_text = tok.decode(r.completion_ids[row][environment_tokens[row]])
        turns = int(r.extras["turns"][row])
        assert env_text.count("Try again.") == turns - 1
        prompt_ids = r.prompt_ids[row][r.prompt_mask[row].bool()].tolist()
        episode_ids = prompt_ids + r.completion_ids[row][context[row]].tolist()
        sampled_texts = tok.decode(r.completion_ids[row][context[row]]).split("Try again.")
        differs += rerendered_ids(tok, problems[0].prompt, [t for t in sampled_texts][:turns]) != episode_ids
    assert differs == len(r.texts)
    module.policy.eval()
    for chunked in (True, False):
        module.hparams.chunked_lm_head = chunked
        with torch.no_grad():
            logps = module.completion_scores(module.policy, r).logps
        assert torch.allclose(logps[loss], r.logprobs[loss], atol=1e-4, rtol=0), (chunked, (logps - r.logprobs)[loss].abs().max())
    return step


def test_tiny_episode_logprobs_equal_the_training_forward_under_a_template_that_rewrites_earlier_turns():
    torch.manual_seed(0)
    module = tiny()
    problems = [problem(), TextProblem([{"role": "user", "content": "Say 7, and say it inside answer tags."}], "7",
                                       lambda c: 1.0 if "7" in c else 0.0)]
    step = check_sampled_tokens_are_trained(module, problems)
    assert step.metrics["episodes/turns_mean"] > 1.5


def never_right():
    """Never fully right (every episode plays all its turns), graded by the share of vowels so
    episodes' rewards differ."""
    vowels = lambda c: min(sum(ch in "aeiou" for ch in c) / max(len(c), 1), 0.99)  # noqa: E731
    return TextProblem([{"role": "user", "content": "Name a colour."}], "-", vowels)


@pytest.mark.real_model
def test_smollm2_two_turn_episode_logprobs_equal_the_training_forward_and_it_trains_one_step():
    torch.manual_seed(0)
    module = GRPO(model="smollm2-135m-instruct", num_generations=2, max_new_tokens=8, sampling_seed=0,
                  temperature=1.0, max_prompt_length=128, lr=1e-6,
                  episodes={"environment": "retry", "environment_args": {"attempts": 2}, "max_turns": 2})
    never = never_right()
    step = check_sampled_tokens_are_trained(module, [never])
    assert (step.rollout.extras["turns"] == 2).all()
    before = [p.detach().clone() for p in module.policy.parameters()]
    fit(module, [never], steps=1)
    assert any(not torch.equal(a, p) for a, p in zip(before, module.policy.parameters()))


# ------------------------------------------------------------------ a plain problem is a one-turn episode
def test_single_turn_episodes_are_exactly_the_plain_rollout():
    module = GRPO(model="tiny", num_generations=3, max_new_tokens=8, sampling_seed=0)
    problems = [problem(), problem("7")]
    plain = SampleNow()(module, problems)
    one_turn = Episodes(EpisodeOptions(environment="single_turn", max_turns=1))(module, problems)
    a, b = plain.rollout, one_turn.rollout
    width = a.completion_ids.shape[1]
    assert torch.equal(a.completion_mask, b.completion_mask[:, :width]) and torch.equal(a.completion_mask, b.context_mask[:, :width])
    assert torch.equal(a.completion_ids[a.completion_mask.bool()], b.completion_ids[b.completion_mask.bool()])
    assert torch.equal(a.logprobs, b.logprobs[:, :width])
    assert plain.scored.scores == one_turn.scored.scores and a.texts == b.texts


# ------------------------------------------------------------------ limits and failures
def test_an_episode_over_its_token_budget_is_cut_flagged_and_counted():
    module = tiny(episodes={"environment": "retry", "environment_args": {"attempts": 5}, "max_turns": 5,
                            "max_episode_tokens": 30})
    step = module.rollout_step(module, [TextProblem("x", "-", lambda c: 0.0)])
    assert (step.rollout.context_mask.sum(-1) <= 30).all()
    assert step.rollout.truncated.all() and step.metrics["episodes/truncated_frac"] == 1.0


class Explodes:
    def __init__(self, problem, on_turn=1):
        self.problem, self.on_turn, self.turn = problem, on_turn, 0

    def reset(self):
        if self.on_turn == 0:
            raise RuntimeError("cannot start")
        return self.problem.prompt

    def step(self, text):
        self.turn += 1
        if self.turn == self.on_turn and self.problem.answer == "bad":
            raise RuntimeError("boom")
        return Observation([{"role": "user", "content": "again"}], reward=1.0, done=self.turn >= 2)


def test_an_environment_that_raises_scores_zero_is_counted_and_warned_once_and_all_failing_stops():
    module = tiny(episodes={"environment": "tests.test_episodes:Explodes", "max_turns": 3})
    good, bad = TextProblem("a", "good", lambda c: 1.0), TextProblem("b", "bad", lambda c: 1.0)
    with pytest.warns(UserWarning, match="boom"):
        step = module.rollout_step(module, [good, bad])
    assert step.scored.scores == [1.0] * 3 + [0.0] * 3 and step.metrics["episodes/failed"] == 3.0
    with pytest.raises(RuntimeError, match="every episode of this step failed.*boom"):
        module.rollout_step(module, [bad])
    module.rollout_step.make_env = lambda p: Explodes(p, on_turn=0)
    with pytest.raises(RuntimeError, match="cannot start"):
        module.rollout_step(module, [good])


# ------------------------------------------------------------------ composes
def fit(module, problems, steps=2):
    data = ToyDataModule(batch_size=len(problems), val_size=0)
    data.train_dataloader = lambda: torch.utils.data.DataLoader(problems * 8, batch_size=len(problems), collate_fn=list)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    return trainer


@pytest.mark.parametrize("cls,extra", [(GRPO, {}), (GRPO, {"dynamic_sampling": True, "max_resample_batches": 1}),
                                       (Intuitor, {}), (NTHR, {}), (GRPO, {"num_iterations": 2, "beta": 0.04}),
                                       (GRPO, {"lora": {"r": 4}}), (GRPO, {"loss_type": "dapo"}),
                                       (GRPO, {"rollout_correction": {"level": "token", "mode": "truncate", "cap": 2.0}})])
def test_the_training_step_runs_unchanged_on_episodes(cls, extra):
    torch.manual_seed(0)
    module = tiny(**extra) if cls is GRPO else cls(**{**dict(model="tiny", num_generations=3, max_new_tokens=10,
                                                            episodes={"environment": "retry", "max_turns": 2}), **extra})
    assert isinstance(module.rollout_step, DynamicEpisodes if extra.get("dynamic_sampling") else Episodes)
    trainer = fit(module, [problem(), problem("7")])
    assert trainer.global_step >= 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss" if "train/loss" in trainer.callback_metrics else "loss"]))


@pytest.mark.parametrize("cls,kw,message", [
    (HRPO, {}, "samples with its own engine"),
    (GRPO, {"top_entropy_quantile": 0.2}, "top_entropy_quantile=1.0"),
    (GRPO, {"episodes": {"max_turns": 0}}, "max_turns must be >= 1"),
    (GRPO, {"episodes": {"reward": "max"}}, "choose one of"),
    (GRPO, {"episodes": {"turns": 2}}, "unknown key"),
])
def test_combinations_that_cannot_work_fail_before_training_in_one_line(cls, kw, message):
    settings = {"model": "tiny", "num_generations": 2, "episodes": {"environment": "retry"}, **kw}
    with pytest.raises(ValueError, match=message) as err:
        cls(**settings)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ a tool-use episode, scripted
class ScriptedEngine:
    """Stands in for the sampler: row i's next turn is the next text of its script (EOS-ended
    unless the text ends in a stop string), each token at log-prob -1."""

    def __init__(self, tokenizer, turns):
        self.tokenizer, self.turns, self.calls = tokenizer, list(turns), 0
        self.eos_ids, self.pad_id = [tokenizer.eos_token_id], tokenizer.pad_token_id

    def generate(self, ids, mask, generator=None):
        from lit_reason.rollout import Rollout

        text = self.turns[self.calls]
        self.calls += 1
        row = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        row += [] if text.endswith("</tool_call>") else self.eos_ids
        b = ids.shape[0]
        completion = torch.tensor([row] * b)
        return Rollout(ids, mask, completion, torch.ones_like(completion), -torch.ones(b, len(row)),
                       torch.zeros(b, dtype=torch.bool), [text] * b)


def test_a_tool_call_is_answered_by_the_tool_and_its_result_is_context_not_loss():
    from lit_reason.rollout_step.episodes import Episode, episode_rollout, play_episodes
    from lit_reason.tasks.tools.environment import ToolUse

    tok = GRPO(model="tiny", num_generations=2).tokenizer
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "37*91"}}</tool_call>'
    env = ToolUse(TextProblem("37*91?", "3367", lambda c: 1.0 if "3367" in c else 0.0), tools=["calculator"])
    episode = Episode(env, tok(tok.apply_chat_template(env.reset(), tokenize=False, add_generation_prompt=True),
                               add_special_tokens=False)["input_ids"])
    engine = ScriptedEngine(tok, [call, "<answer>3367</answer>"])
    play_episodes([episode], engine, tok, [TurnWrapper(tok, True)], EpisodeOptions(max_turns=4), None, "cpu")
    r = episode_rollout([episode], tok.pad_token_id, 0.0, "cpu")
    tool_turn = "<|im_end|>\n<|im_start|>tool\n3367<|im_end|>\n<|im_start|>assistant\n"  # the cut turn closed first
    assert tok.decode(r.completion_ids[0]) == call + tool_turn + "<answer>3367</answer><|im_end|>"
    assert tok.decode(r.completion_ids[0][r.completion_mask[0].bool()]) == call + "<answer>3367</answer><|im_end|>"
    assert episode.rewards == [None, 1.0] and episode_reward(episode.rewards) == 1.0 and not episode.truncated
    assert (r.logprobs[0][r.completion_mask[0].bool()] == -1).all() and (r.logprobs[0][~r.completion_mask[0].bool()] == 0).all()
    from lit_reason.rollout_step.episodes import episode_metrics

    bad = Episode(ToolUse(problem(), tools=["calculator"]), [1])
    bad.env.step("<tool_call>{oops</tool_call>")
    counted = episode_metrics([episode, bad], [1.0, 0.0])
    assert (counted["episodes/tool_calls"], counted["episodes/malformed_tool_calls"]) == (2.0, 1.0)


# ------------------------------------------------------------------ the reference trainer's environment_factory
class Counter:
    """Written to the reference trainer's environment_factory contract (no lit-reason import)."""

    def reset(self, **kwargs) -> str:
        self.count, self.target = 0, int(kwargs["answer"])
        return f" Reach {self.target} with the counter."

    def increment(self, by: int) -> int:
        """Add to the counter.

        Args:
            by: how much to add
        """
        self.count += by
        return self.count

    def get_reward(self) -> float:
        return float(self.count == self.target)


def test_an_environment_factory_class_runs_unchanged_its_methods_are_the_tools_and_it_owns_the_reward():
    from lit_reason.rollout_step.episodes import Episode, play_episodes
    from lit_reason.tasks.environment import resolve_environment

    tok = GRPO(model="tiny", num_generations=2).tokenizer
    env = resolve_environment("trl")(TextProblem("Count.", "3", lambda c: 0.0), factory="tests.test_episodes:Counter")
    prompt = env.reset()
    assert prompt[-1]["content"] == "Count. Reach 3 with the counter." and '"name": "increment"' in prompt[0]["content"]
    episode = Episode(env, tok(tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                               add_special_tokens=False)["input_ids"])
    call = '<tool_call>{"name": "increment", "arguments": {"by": 3}}</tool_call>'
    play_episodes([episode], ScriptedEngine(tok, [call, "done"]), tok, [TurnWrapper(tok, True)],
                  EpisodeOptions(max_turns=3), None, "cpu")
    assert episode.rewards == [None, 1.0] and "<|im_start|>tool\n3<|im_end|>" in tok.decode(episode.ids)
    with pytest.raises(ValueError, match="environment_args.factory 'nowhere:Env': no module 'nowhere'"):
        resolve_environment("trl")(problem(), factory="nowhere:Env")


@pytest.mark.parametrize("arg,message", [("--model.init_args.episodes.reward=max", "error: model.episodes.reward='max': choose"),
                                         ("--model.init_args.top_entropy_quantile=0.2", "error: model.top_entropy_quantile < 1 with")])
def test_a_bad_episodes_setting_is_one_line_from_the_cli(arg, message, capsys):
    from lit_reason.app.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "enigmata_retry.yaml"), arg, "--trainer.max_steps=1"])
    assert done.value.code != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and err[0].startswith(message)
