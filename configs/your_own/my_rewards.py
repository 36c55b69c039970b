"""Reward functions the way a TRL user writes them: batched, dataset columns as keyword arguments.

``completions`` are chat-message lists because the prompts in reverse_words.jsonl are messages
(TRL's conversational format); ``solution`` and ``length`` are columns of that file. None means
"does not apply to this row" and is left out of that reward's normalisation.
"""

import re

ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _text(completion):
    return completion[0]["content"] if isinstance(completion, list) else completion


def answer_in_tags(completions, **kwargs):
    """1.0 when the completion has exactly one <answer>...</answer> block."""
    return [1.0 if len(ANSWER.findall(_text(c))) == 1 else 0.0 for c in completions]


def letters_in_place(completions, solution, **kwargs):
    """Share of the solution's letters the answer has in the right place (partial credit); without
    an answer block the completion's last word is taken, so a model that ignores the tags still
    gets a signal to start from."""
    rewards = []
    for completion, gold in zip(completions, solution):
        if not gold:
            rewards.append(None)  # no solution on this row: abstain
            continue
        text = _text(completion)
        found = ANSWER.findall(text)
        words = re.findall(r"[A-Za-z]+", text)
        answer = found[-1].strip() if found else (words[-1] if words else "")
        rewards.append(sum(a == b for a, b in zip(answer.lower(), gold)) / len(gold))
    return rewards
