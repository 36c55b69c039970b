"""DDP on CPU (gloo, 2 processes): ranks stay identical, and for the same fixed rollouts split over
2 ranks the synchronised gradient equals the 1-process gradient.

``grpo`` (mean of sequence means), ``dr_grpo`` (sum / (B x L)) and ``dapo`` (sum / GLOBAL token
count) are rank-invariant. ``bnpo`` normalises by the LOCAL token count by definition (as in the
reference trainer): its DDP gradient is the mean of per-rank token means, which the test checks
against that formula instead; use ``dapo`` for the rank-invariant token mean.
"""

import pickle

import lightning as L
import pytest
import torch

from datamodules.base import ProblemDataModule, ProblemDataset
from lit_reason.modules import GRPO
from lit_reason.tasks.problem import TextProblem
from lit_reason.rollout import Rollout

G, PROMPTS, T = 4, 4, 6


def fixed_rollout(module: GRPO) -> tuple[Rollout, torch.Tensor]:
    """16 completions with different lengths and rewards; the same on every rank."""
    gen = torch.Generator().manual_seed(123)
    rows = G * PROMPTS
    prompt = torch.randint(5, 100, (rows, 3), generator=gen)
    ids = torch.randint(5, 100, (rows, T), generator=gen)
    lengths = torch.tensor([6, 2, 4, 1, 6, 6, 3, 5, 2, 2, 6, 4, 1, 3, 5, 6])
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    rewards = torch.tensor([1, 0, 0, 1, 0.5, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0.2, 0.7])
    r = Rollout(prompt, torch.ones_like(prompt), ids, mask, torch.zeros(rows, T), torch.zeros(rows, dtype=torch.bool),
                ["x"] * rows)
    return r, rewards


class FixedRolloutGRPO(GRPO):
    """Replays the fixed rollout: each rank takes its own contiguous share of whole groups."""

    def generate(self, problems, engine=None, repeats=None, generator=None):
        rollout, _ = fixed_rollout(self)
        share = slice(self.global_rank * len(rollout.texts) // self.trainer.world_size,
                      (self.global_rank + 1) * len(rollout.texts) // self.trainer.world_size)
        self._share = share
        return rollout.select(share)

    def compute_rewards(self, problems, rollout, scores, old):
        return fixed_rollout(self)[1][self._share], {}


class Prompts(ProblemDataModule):
    def train_dataset(self):
        return ProblemDataset.from_items([TextProblem("p", "a", lambda c: 0.0) for _ in range(64)])


class SaveGrad(L.Callback):
    def __init__(self, path):
        self.path = path

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grad = torch.cat([p.grad.flatten() for p in pl_module.policy.parameters()])
        with open(f"{self.path}.rank{trainer.global_rank}", "wb") as f:
            pickle.dump(grad, f)


def run(loss_type, devices, path, steps=1, lr=0.0, fixed=True):
    L.seed_everything(0)
    cls = FixedRolloutGRPO if fixed else GRPO
    module = cls(model="tiny", num_generations=G, max_new_tokens=T, lr=lr, loss_type=loss_type, max_grad_norm=0.0,
                 prompt_format="plain")
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=devices,
                        strategy="ddp_spawn" if devices > 1 else "auto", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[SaveGrad(path)])
    trainer.fit(module, Prompts(batch_size=PROMPTS // devices))
    return [pickle.load(open(f"{path}.rank{r}", "rb")) for r in range(devices)]


def per_rank_bnpo_gradient(path):
    """The bnpo gradient under DDP by its definition: mean over ranks of each rank's token-mean gradient."""
    grads = []
    for rank in range(2):
        L.seed_everything(0)
        module = GRPO(model="tiny", num_generations=G, max_new_tokens=T, loss_type="bnpo", prompt_format="plain")
        rollout, rewards = fixed_rollout(module)
        share = slice(rank * 8, rank * 8 + 8)
        from lit_reason.algorithms import objectives as obj

        part = rollout.select(share)
        logits, _ = module.policy_logits(module.policy, part)
        lp = obj.token_logps(logits, part.completion_ids)
        adv = obj.group_advantages(rewards[share], G)
        loss, _ = obj.policy_loss(lp, lp.detach(), adv, part.completion_mask.float(), loss_type="bnpo")
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in module.policy.parameters()]))
    return (grads[0] + grads[1]) / 2


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_ddp_gradient_equals_single_process(loss_type, tmp_path):
    single = run(loss_type, 1, str(tmp_path / "single"))[0]
    ranks = run(loss_type, 2, str(tmp_path / "ddp"))
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)  # synchronised
    if loss_type == "bnpo":
        torch.testing.assert_close(ranks[0], per_rank_bnpo_gradient(str(tmp_path)), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(ranks[0], single, rtol=1e-3, atol=1e-6)  # local normalisation differs
    else:
        torch.testing.assert_close(ranks[0], single, rtol=1e-5, atol=1e-6)


class SaveParams(L.Callback):
    def __init__(self, path):
        self.path = path

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.policy.parameters()])
        with open(self.path / f"params.rank{trainer.global_rank}", "wb") as f:
            pickle.dump(flat, f)


def test_ddp_ranks_keep_identical_parameters(tmp_path):
    """Real rollouts (each rank samples its own prompts' groups) for 3 steps: parameters stay equal."""
    L.seed_everything(0)
    from datamodules import ToyDataModule

    module = GRPO(model="tiny", num_generations=2, max_new_tokens=4, lr=1e-2, prompt_format="plain")
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[SaveParams(tmp_path)])
    trainer.fit(module, ToyDataModule(batch_size=2, val_size=0))
    p0, p1 = (pickle.load(open(tmp_path / f"params.rank{r}", "rb")) for r in range(2))
    torch.testing.assert_close(p0, p1, rtol=0, atol=0)
    initial = torch.cat([p.detach().flatten() for p in GRPO(model="tiny").policy.parameters()])
    assert not torch.allclose(p0, initial)  # it did train
