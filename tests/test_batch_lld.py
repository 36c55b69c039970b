"""BatchLLDMonitor: the paper's per-batch LLD against log-likelihoods computed by hand."""

import pytest
import torch

from callbacks.batch_lld import BatchLLDMonitor, mixed_correct_rows, question_deltas
from lit_reason.modules import GRPO
from lit_reason.tasks.problem import TextProblem


def test_question_deltas_average_each_questions_rows():
    before = torch.tensor([0.0, 1.0, 2.0, 5.0])
    after = torch.tensor([1.0, 0.0, 4.0, 5.0])
    # question 3: (+1 - 1) / 2 = 0; question 7: (+2 + 0) / 2 = 1
    assert question_deltas(before, after, torch.tensor([3, 3, 7, 7])).tolist() == [0.0, 1.0]


def test_only_correct_rows_of_mixed_groups_are_measured():
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5])  # G = 2: mixed, all right, all wrong, mixed
    assert mixed_correct_rows(scores, 2).tolist() == [0, 6]


class Trainer:  # what the hook reads of a trainer
    global_step = 1


def hand_loglik(module, prompt_ids, completion):
    ids = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logp = torch.log_softmax(module.policy(input_ids=ids).logits[0].double(), -1)
    return sum(float(logp[len(prompt_ids) + i - 1, t]) for i, t in enumerate(completion))


def test_the_logged_delta_is_the_change_of_the_correct_rows_loglik_per_question():
    torch.manual_seed(0)
    module = GRPO(model="tiny", num_generations=2, max_new_tokens=6, prompt_format="plain", temperature=1.0)
    problems = [TextProblem("ab", "a", lambda c: 0.0), TextProblem("cdef", "a", lambda c: 0.0)]
    rollout = module.generate(problems, generator=torch.Generator().manual_seed(0))
    scores = [1.0, 0.0, 0.0, 1.0]  # one correct row in each (mixed) group
    prompts = [module.tokenizer("ab")["input_ids"], module.tokenizer("cdef")["input_ids"]]
    rows = [0, 3]
    completion = lambda r: rollout.completion_ids[r, : int(rollout.completion_mask[r].sum())].tolist()  # noqa: E731
    before = [hand_loglik(module, prompts[r // 2], completion(r)) for r in rows]
    with torch.no_grad():  # an "update"
        module.policy.model.norm.weight.mul_(1.3)
    after = [hand_loglik(module, prompts[r // 2], completion(r)) for r in rows]
    logged = {}
    module.log_dict = lambda d, **kw: logged.update(d)
    monitor = BatchLLDMonitor()
    monitor.on_train_batch_end(Trainer(), module, {"rollout": rollout, "scores": scores}, None, 0)
    deltas = [a - b for a, b in zip(after, before)]
    assert monitor.history[0]["deltas"] == pytest.approx(deltas, abs=1e-4)
    assert logged["lld/batch_mean_delta"] == pytest.approx(sum(deltas) / 2, abs=1e-4)
    assert logged["lld/batch_share_displaced"] == sum(d < 0 for d in deltas) / 2
    assert logged["lld/batch_questions"] == 2.0
