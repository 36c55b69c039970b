"""Asynchronous rollouts (lit_reason.rollout_step.async_rollouts): k = 0 is the synchronous trainer,
the staleness bound holds and generation overlaps training, a dead or stalled sampler ends the run
in one line naming it, and a run killed at random points and resumed trains the same prompts.

The tests that spawn a sampler process are marked integration (each spawn imports torch and the
model in a fresh interpreter)."""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules import ToyDataModule
from datamodules.resumable import EpochRandomSampler, ResumableDataLoader
from lit_reason.app.cli import main
from lit_reason.app.cli_errors import one_line_error
from lit_reason.modules import GRPO, HRPO
from lit_reason.rollout import SamplingConfig
from lit_reason.rollout_step.async_rollouts import (AsyncRollouts, AsyncRolloutStep, LoaderPlan, batch_age,
                                                     min_version, sync_due)
from lit_reason.rollout_step.sampler_worker import GenerateRequest, SamplerWorker, SamplerWorkerError, WorkerSpec
from lit_reason.rollout.vllm_server import ServerError
from lit_reason.rollout.weight_sync import inference_weights


# --------------------------------------------------------------------------- pure parts
def test_versions_staleness_and_sync_schedule_by_hand():
    # k = 2, first version 3 (a resumed run): batch 4 may use v3 (not v2, never pushed), batch 9 needs v7
    assert [min_version(i, 2, 3) for i in (3, 4, 5, 6, 9)] == [3, 3, 3, 4, 7]
    assert batch_age(9, 7, 2) == 2 and batch_age(9, 9, 0) == 0
    with pytest.raises(RuntimeError, match=r"age 3\), outside the staleness bound \[0, 2\]"):
        batch_age(9, 6, 2)
    with pytest.raises(RuntimeError, match="age -1"):
        batch_age(5, 6, 2)  # sampled by weights from the future: a bookkeeping bug
    # pushes before training batches 3 (first, done at start: not due), 5, 7 with sync_every 2
    assert [i for i in range(3, 9) if sync_due(i, 3, 2)] == [5, 7]


def test_every_reachable_batch_meets_its_bound_under_the_push_schedule():
    """Brute force over (k, sync_every): the newest version pushed when batch i is trained is at
    least min_version(i), so no batch waits for weights that never come."""
    for k in range(4):
        for n in range(1, k + 2):
            for first in (0, 5):
                newest = first
                for i in range(first, first + 20):
                    if sync_due(i, first, n):
                        newest = i
                    assert newest >= min_version(i, k, first), (k, n, first, i)


def test_loader_plan_is_the_loaders_own_order_across_epochs():
    data = ToyDataModule(train_size=11, batch_size=3, val_size=0, seed=4)
    dataset = data.train_dataset()
    loader = ResumableDataLoader(dataset, batch_size=3, sampler=EpochRandomSampler(dataset, seed=7), drop_last=True,
                                 collate_fn=lambda b: b)
    plan = LoaderPlan(loader, len(loader))
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        for b, batch in enumerate(loader):
            assert [p.prompt for p in batch] == [p.prompt for p in plan.problems(epoch, b)]
        assert plan.indices(epoch, len(loader)) == plan.indices(epoch + 1, 0)  # past the end: the next epoch


def test_a_loader_it_cannot_plan_is_refused():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from range(3)

    with pytest.raises(ValueError, match="needs a map-style dataset"):
        LoaderPlan(torch.utils.data.DataLoader(Stream(), batch_size=2), float("inf"))


@pytest.mark.parametrize("options, message", [
    ({"max_staleness": -1}, "max_staleness must be >= 0"),
    ({"max_staleness": 1, "sync_every": 3}, r"sync_every must be in \[1, max_staleness \+ 1\] = \[1, 2\]"),
    ({"max_staleness": 0, "sync_every": 2}, r"sync_every must be in \[1, max_staleness \+ 1\] = \[1, 1\]"),
    ({"timeout_s": 0}, "timeout_s must be > 0"),
    ({"worker_threads": 4096}, "worker_threads=4096: this machine gives the run"),
    ({"max_staleness": "1"}, "max_staleness must be int"),
    ({"lora_sync": "delta"}, r"lora_sync must be one of \('merged', 'adapter'\)"),
    ({"server": {"url": "localhost:8000"}}, r"server.url='localhost:8000' is not a server address: write it as http"),
    ({"server": {"adress": "http://h:1"}}, r"model.async_rollouts.server: unknown key\(s\) \['adress'\]"),
    ({"server": {"url": "http://h:1"}, "lora_sync": "adapter"}, "adapter is for the built-in sampler; a vLLM server"),
])
def test_bad_settings_stop_in_one_line_before_anything_loads(options, message):
    with pytest.raises(ValueError, match=message) as err:
        GRPO(model="tiny", async_rollouts=options)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cls, options, message", [
    (GRPO, {"rollout_engine": "vllm"}, "not with a colocated vLLM: set model.rollout_engine: builtin"),
    (HRPO, {}, "its own engine"),
    (GRPO, {"dynamic_sampling": True}, "cannot refill batches on demand"),
])
def test_engines_it_cannot_serve_are_refused(cls, options, message):
    with pytest.raises(ValueError, match=message):
        cls(model="tiny", async_rollouts={"max_staleness": 1}, **options)


def test_adapter_only_sync_without_lora_is_refused():
    with pytest.raises(ValueError, match="lora_sync: adapter needs model.lora"):
        GRPO(model="tiny", async_rollouts={"lora_sync": "adapter"})


def test_a_server_that_does_not_answer_is_one_line_at_setup():
    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        step = AsyncRolloutStep(AsyncRollouts(timeout_s=5, server={"url": url}))
        module = SimpleNamespace(trainer=SimpleNamespace(strategy=SingleDeviceStrategy("cpu"), num_devices=1))
        with pytest.raises(ServerError, match=f"vLLM server {url} did not answer /v1/models") as err:
            step.setup(module)
        assert "\n" not in str(err.value)
        module.trainer.world_size = 2
        with pytest.raises(ValueError, match="server serves one trainer process, not 2 ranks"):
            step.setup(module)


class FSDPStrategy:  # stands for Lightning's (the check reads the class name)
    root_device = torch.device("cpu")


class SingleDeviceStrategy:
    def __init__(self, device):
        self.root_device = torch.device(device)


@pytest.mark.parametrize("strategy, devices, message", [
    (FSDPStrategy(), 1, "needs full weights on each rank .* not FSDPStrategy"),
    (SingleDeviceStrategy("cuda"), 1, "runs its built-in sampler on CPU cores: with a GPU trainer, sample from"),
    (SingleDeviceStrategy("cpu"), 4096, "4096 ranks on this machine, each with a sampler of worker_threads=1"),
])
def test_strategies_and_machines_it_cannot_serve_are_refused_at_setup(strategy, devices, message):
    step = AsyncRolloutStep(AsyncRollouts())
    module = SimpleNamespace(trainer=SimpleNamespace(strategy=strategy, num_devices=devices))
    with pytest.raises(ValueError, match=message):
        step.setup(module)
    step.setup(SimpleNamespace(trainer=SimpleNamespace(strategy=SingleDeviceStrategy("cpu"), num_devices=1)))


@pytest.mark.parametrize("override, line", [
    ("--model.async_rollouts.max_staleness=-1", "error: model.async_rollouts.max_staleness must be >= 0 (got -1)"),
    ("--model.rollout_engine=vllm", "error: model.async_rollouts samples in a process of its own"),
    ("--model.async_rollouts.server.url=localhost:8000",
     "error: model.async_rollouts.server.url='localhost:8000' is not a server address"),
])
def test_the_cli_prints_bad_async_settings_as_one_line(override, line, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(Path(__file__).parents[1] / "configs" / "grpo" / "async_rollouts.yaml"), override])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(line) and "Traceback" not in "\n".join(err)


def test_worker_errors_reach_the_cli_as_one_line():
    err = SamplerWorkerError("sampler worker sampler-rank0 (pid 1) died (signal SIGKILL) while generating batch 3")
    try:
        raise RuntimeError("wrapped by Lightning") from err
    except RuntimeError as outer:
        assert one_line_error(outer) == str(err)


# --------------------------------------------------------------------------- with a sampler process
class Record(L.Callback):
    """Per rollout step: the prompts of the trained rollout (decoded from its own prompt ids), its
    texts, the async metrics and when the step ended; optionally raises (stands for a kill)."""

    def __init__(self, kill=None):
        self.kill, self.steps = kill, {}

    def _maybe_kill(self, trainer, phase):
        if self.kill is not None and self.kill == (trainer.global_step, phase):
            raise Killed(f"killed at {self.kill}")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._maybe_kill(trainer, "before_rollout")
        self.began = time.time()

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self._maybe_kill(trainer, "mid_update")  # the rollout taken, the next batches being generated

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        rollout = outputs["rollout"]
        prompts = module.tokenizer.batch_decode([ids[mask.bool()] for ids, mask in zip(rollout.prompt_ids,
                                                                                          rollout.prompt_mask)])
        old = outputs["old"].get("old_logps")  # the trainer's log-probs of the sampled tokens (mu > 1 / minibatches)
        gap = float(((old - rollout.logprobs).abs() * rollout.completion_mask).max()) if old is not None else None
        self.steps[trainer.global_step] = {
            "prompts": prompts, "texts": list(rollout.texts), "began": self.began, "ended": time.time(),
            "sampler_vs_trainer": gap,
            **{k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("async/", "rollout_correction/"))},
        }
        self._maybe_kill(trainer, "after_update")  # before ModelCheckpoint saves this step


class Killed(RuntimeError):
    pass


# the entropy bonus moves the weights at every step, even when a batch's rewards all agree
BASE = dict(model="tiny", num_generations=2, max_new_tokens=6, lr=1e-2, prompt_format="plain", entropy_coef=0.1,
            rollout_correction={"cap": 2.0})


def fit(tmp_path=None, steps=5, record=None, resume=False, extra=(), **module_kwargs):
    L.seed_everything(0)
    module = GRPO(**{**BASE, **module_kwargs})
    module.initial = [p.detach().clone() for p in module.parameters()]
    record = record or Record()
    callbacks = [record, *extra]
    if tmp_path is not None:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True, save_top_k=-1))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=tmp_path is not None, callbacks=callbacks,
                        default_root_dir=tmp_path)
    data = ToyDataModule(task="char_fill", train_size=8, batch_size=2, val_size=0)  # partial credit: rewards differ
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt") if resume else None)
    finally:  # an exception skips Lightning's teardown: end the sampler as a killed job's exit would
        module.rollout_step.teardown(module)
    return module, record


@pytest.mark.integration
@pytest.mark.parametrize("lora, lora_sync", [(None, "merged"), ({"r": 4, "alpha": 32.0}, "merged"),
                                             ({"r": 4, "alpha": 32.0}, "adapter")],
                         ids=["full", "lora", "lora-adapter-only"])
def test_k0_is_the_synchronous_trainer(lora, lora_sync):
    """Same seeds, same rollouts, same weights after N steps; two optimizer steps per rollout
    (minibatches), so the sampler's seed follows the optimizer step as the module's does. With
    LoRA the weights reach the sampler merged (W + BA) or adapter-only (the base once, then the A/B
    tensors, applied by the sampler's own peft wrap): either way its log-probs equal the trainer's
    at every step, and a push writes exactly the bytes of what it sends.
    (Without the rollout correction, which reads the sampler's log-probs: those of another process
    agree with the in-process engine's to ~5e-7, not to the bit, so the weights would too.)"""
    kwargs = dict(minibatch_size=2, lora=lora, lr=5e-2 if lora else 1e-2, rollout_correction=None)
    sync, sync_rec = fit(steps=10, **kwargs)
    asyn, async_rec = fit(steps=10, async_rollouts={"max_staleness": 0, "lora_sync": lora_sync}, **kwargs)
    assert sorted(async_rec.steps) == sorted(sync_rec.steps) == [2, 4, 6, 8, 10]
    pushed = (sum(p.numel() * p.element_size() for p in asyn.policy.parameters() if p.requires_grad)
              if lora_sync == "adapter" else sum(t.numel() * t.element_size() for _, t in inference_weights(asyn.policy)))
    for step in sync_rec.steps:
        assert async_rec.steps[step]["texts"] == sync_rec.steps[step]["texts"], step
        assert async_rec.steps[step]["async/age"] == 0.0
        assert async_rec.steps[step]["sampler_vs_trainer"] < 1e-4  # the sampler has the trainer's weights
        if step > 2:  # the first rollout's weights went at the start (the base included)
            assert async_rec.steps[step]["async/sync_mb"] == pytest.approx(pushed / 2**20)
    for (name, p), q in zip(sync.named_parameters(), asyn.parameters()):
        assert torch.equal(p, q), name
    # the weights moved (with LoRA: the adapters), so a sampler left on old weights would have disagreed
    assert max(float((p - q).abs().max()) for p, q in zip(asyn.parameters(), asyn.initial)) > 1e-3


@pytest.mark.integration
def assert_staleness_cycle(steps: list[dict]) -> None:
    """Ages 0, 1, 2, 0, 1, 2 (k = 2, a push every 3 steps); a batch of age 0 was sampled with the
    trainer's weights (log-probs equal), an older one was not."""
    assert [s["async/age"] for s in steps] == [0, 1, 2, 0, 1, 2]
    for s in steps:
        if s["async/age"] == 0:
            assert s["rollout_correction/logp_diff_max"] < 1e-4
        else:
            assert s["rollout_correction/logp_diff_max"] > 1e-3


def test_staleness_bound_and_overlap():
    """k = 2 with a push every 3 steps: ages are 0, 1, 2, 0, 1, 2 (batch 3 must wait for v3); each
    batch's sampler log-probs match the trainer's exactly when its age is 0 and not otherwise (the
    version tag is the weights that sampled it); and the sampler generated ahead, during training."""
    module, record = fit(steps=6, async_rollouts={"max_staleness": 2, "sync_every": 3})
    steps = [record.steps[s] for s in sorted(record.steps)]
    assert_staleness_cycle(steps)
    assert module.rollout_step.age_counts == {0: 2, 1: 2, 2: 2}
    assert max(s["async/queue_depth"] for s in steps) >= 1  # a batch was ready before its step began
    assert all(s["async/sync_s"] >= 0 and s["async/trainer_idle_s"] >= 0 and s["async/sampler_idle_s"] >= 0 for s in steps)


@pytest.mark.integration
def test_a_killed_worker_ends_the_run_in_one_line_within_the_timeout():
    class KillWorker(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 2:
                self.at = time.monotonic()
                os.kill(module.rollout_step.worker.process.pid, signal.SIGKILL)

    killer = KillWorker()
    with pytest.raises(SamplerWorkerError) as err:
        fit(steps=6, extra=[killer], async_rollouts={"max_staleness": 1, "timeout_s": 120})
    assert time.monotonic() - killer.at < 30  # death is seen at the next poll, not at the timeout
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("sampler worker sampler-rank0 (pid ")
    assert "died (signal SIGKILL) while " in message and "the trainer was waiting for" in message


@pytest.mark.integration
def test_a_stalled_worker_ends_the_wait_at_the_timeout_naming_what_it_was_doing(tiny_policy):
    policy, tokenizer = tiny_policy.model, tiny_policy.tokenizer
    worker = SamplerWorker(WorkerSpec("sampler-test", "tiny", "float32", SamplingConfig(max_new_tokens=4), 1),
                           inference_weights(policy), timeout_s=300)
    try:
        worker.push(inference_weights(policy), 0)
        worker.push(inference_weights(policy), 1)  # waits for the child to load v0 (its start included)
        worker._wait_for(lambda: worker.loaded == 1, "the ack of weights v1")
        os.kill(worker.process.pid, signal.SIGSTOP)  # alive, but answers nothing
        worker.timeout_s = 2.0
        ids = torch.tensor([[tokenizer.eos_token_id or 0, 5, 6]])
        worker.request(GenerateRequest(7, ids, torch.ones_like(ids), seed=0, min_version=1))
        began = time.monotonic()
        with pytest.raises(SamplerWorkerError, match=r"sampler worker sampler-test \(pid \d+\) stalled: no answer for "
                                                     r"2s .* while the trainer waited for batch 7; the worker was idle "
                                                     r"with weights v1"):
            worker.take(7)
        assert 2.0 <= time.monotonic() - began < 10
        assert not worker.process.is_alive()  # the stalled child is ended, not left behind
    finally:
        worker.close()


@pytest.mark.integration
def test_a_crash_in_the_worker_reaches_the_terminal_and_ends_the_wait(tiny_policy, tmp_path, capfd):
    missing = str(tmp_path / "no-such-model")
    worker = SamplerWorker(WorkerSpec("sampler-test", missing, "float32", SamplingConfig(max_new_tokens=4), 1),
                           inference_weights(tiny_policy.model), timeout_s=300)
    try:
        with pytest.raises(SamplerWorkerError, match=r"sampler worker sampler-test crashed while loading the model: "
                                                     r".*no-such-model.* \(the trainer was waiting for batch 0\)"):
            worker.take(0)
    finally:
        worker.close()
    assert "Traceback" in capfd.readouterr().err  # the child's own traceback, on the same terminal


@pytest.mark.integration
def test_a_resume_after_kills_at_random_points_trains_every_prompt_once(tmp_path):
    """An uninterrupted k = 1 run, and one killed twice at random (step, phase) points and resumed
    from its last checkpoint: the rollout prompts trained at every step, and so their multiset,
    are the same (8 problems, 4 batches an epoch, 7 steps: the resume crosses an epoch)."""
    steps, options = 7, {"max_staleness": 1}
    _, whole = fit(steps=steps, async_rollouts=options)
    rng = random.Random(31)
    phases = ["before_rollout", "mid_update", "after_update"]
    kills = [(rng.randrange(1, 4), rng.choice(phases)), (rng.randrange(4, steps), rng.choice(phases))]
    lineage: dict[int, list[str]] = {}
    last = tmp_path / "ckpt" / "last.ckpt"
    for kill in [*kills, None]:
        record = Record(kill)
        if kill is not None:
            with pytest.raises(Killed):
                fit(tmp_path, steps=steps, record=record, resume=last.exists(), async_rollouts=options)
        else:
            fit(tmp_path, steps=steps, record=record, resume=last.exists(), async_rollouts=options)
        saved = steps if kill is None else torch.load(last, weights_only=True)["global_step"] if last.exists() else 0
        lineage.update({s: r["prompts"] for s, r in record.steps.items() if s <= saved})
    assert lineage == {s: r["prompts"] for s, r in whole.steps.items()}
    assert Counter(p for ps in lineage.values() for p in ps) == Counter(p for r in whole.steps.values() for p in r["prompts"])


class SavePrompts(L.Callback):
    """Each rank writes the prompts it trained (read from its rollouts) and its final weights."""

    def __init__(self, path):
        self.path, self.prompts = path, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        rollout = outputs["rollout"]
        self.prompts.append(module.tokenizer.batch_decode([i[m.bool()] for i, m in zip(rollout.prompt_ids, rollout.prompt_mask)]))

    def on_train_end(self, trainer, module):
        torch.save({"prompts": self.prompts, "planned": [[p.prompt for p in module.rollout_step.plan.problems(0, b)]
                                                         for b in range(len(self.prompts))],
                    "params": [p.detach().clone() for p in module.parameters()]},
                   self.path / f"rank{trainer.global_rank}.pt")


@pytest.mark.integration
def test_ddp_each_rank_has_its_own_sampler_for_its_own_shard(tmp_path):
    """2 gloo ranks, k = 1: each rank's sampler generates its rank's DistributedSampler shard (the
    rollouts' prompts are the rank's planned batches, and the ranks' differ), and the ranks end
    with identical weights."""
    L.seed_everything(0)
    module = GRPO(**{**BASE, "async_rollouts": {"max_staleness": 1}})
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[SavePrompts(tmp_path)])
    trainer.fit(module, datamodule=ToyDataModule(task="add", train_size=16, batch_size=2, val_size=0))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for rank in ranks:
        assert len(rank["prompts"]) == 3
        assert rank["prompts"] == [[p for p in batch for _ in range(2)] for batch in rank["planned"]]
    assert ranks[0]["prompts"] != ranks[1]["prompts"]
    for p, q in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(p, q)


def test_the_documented_server_yaml_builds():
    """docs/async_rollouts.md's YAML for a vLLM server sampler is a valid model.async_rollouts
    (building the module does not contact the server: setup does)."""
    import re

    import yaml

    text = (Path(__file__).parents[1] / "docs" / "async_rollouts.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.+?)```", text, re.DOTALL) if "server:" in b)
    options = yaml.safe_load(block)["model"]["async_rollouts"]
    module = GRPO(model="tiny", async_rollouts=options)
    config = module.rollout_step.config
    assert config.server.url == "http://10.0.0.7:8000" and config.server.sync_host == "10.0.0.5"
    assert config.max_staleness == 1
