"""TRL's own loss and advantage code, run on inputs we choose (shared by the tests/test_trl_parity*.py files).

TRL's loss lives in ``GRPOTrainer._compute_loss``, a method that first runs the model. :func:`trl_trainer`
builds a trainer with ``object.__new__`` (no model, no accelerator) holding exactly the attributes that
method reads, and :func:`trl_loss` swaps its per-token log-prob/entropy hook for the tensors we feed, so
every line of TRL's aggregation runs as shipped. Advantages come from a real tiny trainer
(:func:`tiny_trainer`) whose reward function replays fixed values. Callers skip first where TRL is
missing (``pytest.importorskip``); this module imports it only when called.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import torch

from lit_reason.algorithms import objectives as obj

TOL = 1e-5
B, T, G = 6, 7, 3


class OneProcess:
    """The accelerator calls ``_compute_loss`` makes, for a single process: all identities."""

    num_processes, process_index, sync_gradients = 1, 0, True

    def gather(self, tensor):
        return tensor

    gather_for_metrics = gather

    def reduce(self, tensor, reduction="sum"):
        return tensor

    def pad_across_processes(self, tensor, dim=0, pad_index=0):  # get_high_entropy_mask's padding
        return tensor


def trl_trainer(loss_type: str, beta: float, eps_low: float, eps_high: float, max_len: int, *,
                accumulation: int = 1, steps_per_generation: int = 1, bias_correction_kl: bool = False,
                importance_sampling_level: str = "token", top_entropy_quantile: float = 1.0):
    """A GRPOTrainer with exactly the attributes ``_compute_loss`` reads (a missing one raises)."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    trainer = object.__new__(GRPOTrainer)
    attrs = dict(
        loss_type=loss_type, beta=beta, epsilon_low=eps_low, epsilon_high=eps_high, max_completion_length=max_len,
        importance_sampling_level=importance_sampling_level, top_entropy_quantile=top_entropy_quantile,
        off_policy_mask_threshold=None, aux_loss_enabled=False, use_vllm=False,
        vllm_importance_sampling_correction=False, _entropy_bonus_enabled=False,
        current_gradient_accumulation_steps=accumulation, accelerator=OneProcess(), model=torch.nn.Module().train(),
        _metrics=defaultdict(lambda: defaultdict(list)),
        args=SimpleNamespace(use_bias_correction_kl=bias_correction_kl, delta=None,
                             steps_per_generation=steps_per_generation),
    )
    for name, value in attrs.items():
        setattr(trainer, name, value)
    return trainer


def trl_loss(trainer, logps, old, ref, advantages, mask, num_items=None, entropies=None):
    """Run TRL's ``_compute_loss`` with ``logps`` (and ``entropies``, default 0) standing in for the model's."""
    ent = torch.zeros_like(logps) if entropies is None else entropies
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logps, ent, None)
    rows, width = mask.shape
    inputs = {
        "prompt_ids": torch.zeros(rows, 1, dtype=torch.long), "prompt_mask": torch.ones(rows, 1, dtype=torch.long),
        "completion_ids": torch.zeros(rows, width, dtype=torch.long), "completion_mask": mask,
        "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum() if num_items is None else num_items,
    }
    return trainer._compute_loss(None, inputs)


def make_batch(padded: bool, seed: int = 0):
    """Log-probs, old (off-policy enough that both clip bounds bite), reference, advantages, mask."""
    gen = torch.Generator().manual_seed(seed)
    logps = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3 - 0.05
    old = logps + torch.randn(B, T, generator=gen, dtype=torch.float64) * 0.4
    ref = logps + torch.randn(B, T, generator=gen, dtype=torch.float64) * 0.3
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.9, 0.2], dtype=torch.float64)
    advantages = obj.group_advantages(rewards, G)
    lengths = torch.tensor([7, 3, 2, 5, 0, 6]) if padded else torch.full((B,), T)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return logps, old, ref, advantages, mask


def tiny_trainer(trainer_cls, config_cls, tmp_path_factory, **config):
    """A real TRL trainer (``GRPOTrainer`` / ``RLOOTrainer``) on the tiny preset, 3 prompts x G
    completions of 4 tokens on CPU; returns ``(trainer, replay)``: its reward function returns
    ``replay["rewards"]``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_reason.models.policy import load_policy

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny")
    policy = load_policy("tiny")
    policy.model.save_pretrained(path)
    policy.tokenizer.save_pretrained(path)
    replay = {"rewards": []}

    def fixed_reward(completions, **kwargs):
        return list(replay["rewards"])

    args = config_cls(output_dir=str(tmp_path_factory.mktemp("out")), per_device_train_batch_size=3 * G,
                      num_generations=G, max_completion_length=4, report_to="none", use_cpu=True,
                      gradient_checkpointing=False, disable_tqdm=True, save_strategy="no", **config)
    trainer = trainer_cls(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=fixed_reward, args=args,
                          train_dataset=Dataset.from_list([{"prompt": "abc"}] * 3),
                          processing_class=AutoTokenizer.from_pretrained(path))
    return trainer, replay


def trl_advantages(trainer, replay: dict, rewards: list) -> tuple[torch.Tensor, torch.Tensor]:
    """``(TRL's advantages, our reward tensor)`` for ``rewards`` (None = missing, as NaN for us):
    TRL's own code inside ``_generate_and_score_completions`` on the replayed rewards of
    ``len(rewards) // G`` prompts of G completions."""
    replay["rewards"] = rewards
    trainer.model.train()
    prompts = [{"prompt": f"q{i // G}"} for i in range(len(rewards))]
    theirs = trainer._generate_and_score_completions(prompts)["advantages"]
    return theirs, torch.tensor([float("nan") if r is None else r for r in rewards])
