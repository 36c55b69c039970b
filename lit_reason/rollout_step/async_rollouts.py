"""Asynchronous rollouts with a staleness bound: a sampler process generates the next batches
while the trainer trains on this one.

Versions and staleness. The policy's version is the number of rollouts (training steps) trained
into its weights; batch ``r`` is trained at step ``r``. The sampler may generate batch ``r`` with
any version ``v >= r - k`` (``max_staleness: k``), so its age ``r - v`` is at most ``k``. The
trainer pushes its weights every ``sync_every`` steps (``sync_every <= k + 1``, or batch ``r``
would wait for a version that never comes) and asks for batches up to ``k`` ahead. With ``k = 0``
batch ``r`` waits for version ``r``: the synchronous trainer, rollout for rollout (the sampler's
generator is seeded from the step exactly as :meth:`GRPO.sampling_generator` is).

Where the prompts come from (the design that makes a resume lose nothing): the trainer trains the
train loader's own batches, in the loader's order. The batches ahead are read from the loader's
sampler, whose order is a pure function of (seed, epoch) (``datamodules.resumable``), and each
batch the loader then yields is checked against the plan. So the sampler never owns a stream of
prompts: a batch is trained exactly when the loader yields it, and a killed run's in-flight
generations are simply generated again after the resume (from the resumed loader position).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from lit_reason.rollout.contract import end_of_sequence_ids
from lit_reason.rollout.vllm_server import VLLMServer, served_model
from lit_reason.rollout.weight_sync import inference_weights
from lit_reason.rollout_step.contract import RolloutStep, ScoredRollout
from lit_reason.rollout_step.sampler_worker import GenerateRequest, SamplerWorker, WorkerSpec, core_count
from lit_reason.tasks.rewards import score_completions
from lit_reason.utils.config_dataclass import parse_config
from lit_reason.utils.optim import optimizer_steps_per_rollout
from lit_reason.utils.rng import rollout_seed

LORA_SYNCS = ("merged", "adapter")


@dataclass
class AsyncRollouts:
    """YAML ``model.async_rollouts: {max_staleness: 1, sync_every: 1, timeout_s: 600}``.

    Args:
        max_staleness: k, how many versions behind the trained policy a batch's sampler may be
            (0 = synchronous, same rollouts as without async).
        sync_every: push the weights every this many training steps (rollouts); <= k + 1.
        timeout_s: longest wait for a batch or a weight sync before the run stops with the
            worker's name and activity (covers one generation, and the worker's start).
        worker_threads: torch threads of the sampler process (the trainer keeps its own).
        lora_sync: with model.lora, ``merged`` pushes W + BA for every weight; ``adapter`` pushes
            the base once and then only the trainable tensors (LoRA A/B), which the sampler
            applies on its own copy of the base (built-in sampler only).
        server: ``{url: http://host:port}``: sample from a vLLM server (:class:`VLLMServer`)
            instead of a built-in engine; the sampler process then only talks to it.
    """

    max_staleness: int = 1
    sync_every: int = 1
    timeout_s: float = 600.0
    worker_threads: int = 1
    lora_sync: str = "merged"
    server: VLLMServer | None = None

    def __post_init__(self) -> None:
        key = "model.async_rollouts"
        if self.max_staleness < 0:
            raise ValueError(f"{key}.max_staleness must be >= 0 (got {self.max_staleness}); 0 is the synchronous trainer")
        if not 1 <= self.sync_every <= self.max_staleness + 1:
            raise ValueError(f"{key}.sync_every must be in [1, max_staleness + 1] = [1, {self.max_staleness + 1}] "
                             f"(got {self.sync_every}): a batch may not be sampled by weights older than max_staleness")
        if not self.timeout_s > 0:
            raise ValueError(f"{key}.timeout_s must be > 0 (got {self.timeout_s})")
        if self.lora_sync not in LORA_SYNCS:
            raise ValueError(f"{key}.lora_sync must be one of {LORA_SYNCS} (got {self.lora_sync!r})")
        self.server = parse_config(VLLMServer, self.server, f"{key}.server")
        if self.server is not None and self.lora_sync == "adapter":
            raise ValueError(f"{key}.lora_sync: adapter is for the built-in sampler; a vLLM server gets merged "
                             "weights: set lora_sync: merged")
        if not 1 <= self.worker_threads <= core_count():
            raise ValueError(f"{key}.worker_threads={self.worker_threads}: this machine gives the run "
                             f"{core_count()} core(s); set 1..{core_count()}")


def min_version(index: int, max_staleness: int, first_version: int) -> int:
    """The oldest weights that may sample batch ``index`` (never older than the run's first push)."""
    return max(index - max_staleness, first_version)


def batch_age(index: int, version: int, max_staleness: int) -> int:
    """Age of batch ``index`` sampled by ``version``; a batch outside [0, k] is a broken invariant."""
    age = index - version
    if not 0 <= age <= max_staleness:
        raise RuntimeError(f"async rollouts: batch {index} was sampled by weights v{version} (age {age}), "
                           f"outside the staleness bound [0, {max_staleness}]")
    return age


def sync_due(index: int, first_version: int, sync_every: int) -> bool:
    """Whether the weights are pushed before training batch ``index``."""
    return index > first_version and (index - first_version) % sync_every == 0


def sync_weights(policy: Any, lora_sync: str, everything: bool = False) -> Iterator[tuple[str, Tensor]]:
    """What a push sends: ``merged``, the inference weights (LoRA merged); ``adapter``, the peft
    model's own tensors, all of them (``everything``: the first push, the base included) or the
    trainable ones (LoRA A/B, modules_to_save)."""
    if lora_sync == "merged":
        return inference_weights(policy)
    return ((n, p) for n, p in policy.named_parameters() if everything or p.requires_grad)


class LoaderPlan:
    """The train loader's batches of any epoch, as dataset indices, without iterating the loader:
    the sampler's order is drawn from a copy with ``set_epoch`` (Lightning's DistributedSampler and
    ``EpochRandomSampler`` are pure functions of the epoch)."""

    def __init__(self, loader: Any, batches_per_epoch: float) -> None:
        dataset = getattr(loader, "dataset", None)
        sampler = getattr(loader, "sampler", None)
        if dataset is None or not hasattr(dataset, "__getitem__") or sampler is None or not loader.batch_size \
                or batches_per_epoch == float("inf"):
            raise ValueError("model.async_rollouts plans batches ahead from the train loader's sampler: it needs a "
                             "map-style dataset with a batch_size (every ProblemDataModule has one)")
        self.dataset, self.sampler, self.batch_size, self.drop_last = dataset, sampler, loader.batch_size, loader.drop_last
        self.batches_per_epoch = int(batches_per_epoch)
        self._epochs: dict[int, list[list[int]]] = {}

    def indices(self, epoch: int, batch_idx: int) -> list[int]:
        """Dataset indices of batch ``batch_idx`` of ``epoch``; past the epoch's end, the next epoch's."""
        epoch, batch_idx = epoch + batch_idx // self.batches_per_epoch, batch_idx % self.batches_per_epoch
        if epoch not in self._epochs:
            sampler = copy.copy(self.sampler)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            order = list(sampler)
            stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
            self._epochs = {e: b for e, b in self._epochs.items() if e >= epoch - 1}  # the epoch before, at most
            self._epochs[epoch] = [order[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]
        return self._epochs[epoch][batch_idx]

    def problems(self, epoch: int, batch_idx: int) -> list[Any]:
        return [self.dataset[i] for i in self.indices(epoch, batch_idx)]


class AsyncRolloutStep(RolloutStep):
    """``model.async_rollouts``: batches sampled ahead by a :class:`SamplerWorker` (see the module doc).

    Logged per step: ``async/age`` (of the trained batch), ``async/trainer_idle_s`` (the wait for
    it), ``async/sampler_idle_s`` (the sampler's wait before generating it), ``async/sync_mb`` (what
    a push wrote), ``async/sync_s`` (the weight push), ``async/queue_depth`` (batches generated
    ahead, ready); ``age_counts`` (the age histogram of the run) is checkpointed."""

    def __init__(self, config: AsyncRollouts) -> None:
        self.config = config
        self.worker: SamplerWorker | None = None
        self.age_counts: dict[int, int] = {}

    @classmethod
    def check_module(cls, hparams: Any, own_engine: bool) -> None:
        """What a sampler process cannot serve, refused in one line before anything loads."""
        if hparams.get("rollout_engine", "builtin") != "builtin":
            raise ValueError("model.async_rollouts samples in a process of its own (the built-in engine, or a vLLM "
                             "server with model.async_rollouts.server), not with a colocated vLLM: set "
                             "model.rollout_engine: builtin")
        if own_engine:
            raise ValueError("model.async_rollouts: this method samples with its own engine (HRPO's latent mixing), "
                             "which the sampler process does not run; unset model.async_rollouts")
        if hparams.get("dynamic_sampling"):
            raise ValueError("model.async_rollouts cannot refill batches on demand (model.dynamic_sampling): unset one")
        config = hparams.get("async_rollouts") or {}
        if config.get("lora_sync") == "adapter" and not hparams.get("lora"):
            raise ValueError("model.async_rollouts.lora_sync: adapter needs model.lora (there is no adapter to push "
                             "without it): set lora_sync: merged or configure model.lora")
        if (hparams.get("lora") or {}).get("load_in_4bit"):
            raise ValueError("model.async_rollouts syncs full (merged) weights: a 4-bit LoRA base cannot be merged; "
                             "unset model.lora.load_in_4bit")

    def setup(self, module: Any) -> None:
        trainer = module.trainer
        strategy = trainer.strategy
        if type(strategy).__name__.startswith(("FSDP", "DeepSpeed", "ModelParallel")):
            raise ValueError(f"model.async_rollouts needs full weights on each rank (DDP or one device), not "
                             f"{type(strategy).__name__}")
        if self.config.server is not None:
            if int(getattr(trainer, "world_size", 1) or 1) > 1:
                raise ValueError(f"model.async_rollouts.server serves one trainer process, not "
                                 f"{trainer.world_size} ranks (each rank would push its weights into it): run "
                                 "one rank, or use the built-in sampler (one per rank)")
            served_model(self.config.server, min(self.config.timeout_s, 30.0))  # reachable, serving the model
        elif strategy.root_device.type != "cpu":
            raise ValueError("model.async_rollouts runs its built-in sampler on CPU cores: with a GPU trainer, sample "
                             "from a vLLM server (model.async_rollouts.server) or use trainer.accelerator: cpu")
        local_ranks = max(int(getattr(trainer, "num_devices", 1) or 1), 1)
        if local_ranks * self.config.worker_threads > core_count():
            raise ValueError(f"model.async_rollouts: {local_ranks} ranks on this machine, each with a sampler of "
                             f"worker_threads={self.config.worker_threads}, need more than its {core_count()} core(s)")

    def on_train_start(self, module: Any) -> None:
        trainer = module.trainer
        self.plan = LoaderPlan(trainer.train_dataloader, trainer.num_training_batches)
        h = module.hparams
        rows = self.plan.batch_size * h.num_generations
        self.steps_per_rollout = optimizer_steps_per_rollout(rows, h.num_iterations, h.minibatch_size)
        self.first_version = int(module.global_step) // self.steps_per_rollout
        self.requested: dict[int, list[Any]] = {}  # batch index -> the planned prompts
        self.close()
        adapter = self.config.lora_sync == "adapter"
        eos = end_of_sequence_ids(module.tokenizer, module.policy) if self.config.server is not None else None
        spec = WorkerSpec(f"sampler-rank{module.global_rank}", h.model, h.dtype, module.sampling,
                          self.config.worker_threads, lora=h.lora if adapter else None, server=self.config.server,
                          eos=eos, timeout_s=self.config.timeout_s)
        self.worker = SamplerWorker(spec, self._weights(module, everything=True), self.config.timeout_s)
        self.worker.push(self._weights(module, everything=True), self.first_version)

    def _weights(self, module: Any, everything: bool = False):
        return sync_weights(module.policy, self.config.lora_sync, everything)

    def __call__(self, module: Any, batch: list[Any]) -> ScoredRollout:
        if self.worker is None:
            raise RuntimeError("model.async_rollouts runs under a Lightning Trainer (its sampler starts in on_train_start)")
        trainer, k = module.trainer, self.config.max_staleness
        index = int(module.global_step) // self.steps_per_rollout
        epoch, batch_idx = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx
        sync_s, sync_bytes = 0.0, 0
        if sync_due(index, self.first_version, self.config.sync_every) and self.worker.pushed != index:
            sync_s, sync_bytes = self.worker.push(self._weights(module), index)
        for ahead in range(k + 1):
            if index + ahead not in self.requested:
                self._request(module, index + ahead, self.plan.problems(epoch, batch_idx + ahead), ahead)
        if self.requested.pop(index) != [p.prompt for p in batch]:
            self.close()
            raise RuntimeError("model.async_rollouts: the train loader yielded other problems than its sampler's "
                               "order promised; it needs a loader whose order is a pure function of the epoch")
        t0 = time.perf_counter()
        generated = self.worker.take(index)
        trainer_idle = time.perf_counter() - t0
        age = batch_age(index, generated.version, k)
        self.age_counts[age] = self.age_counts.get(age, 0) + 1
        rows = [p for p in batch for _ in range(module.hparams.num_generations)]
        scored = score_completions(module.reward_fns, rows, generated.rollout.texts)
        metrics = {"async/age": float(age), "async/trainer_idle_s": trainer_idle,
                   "async/sampler_idle_s": generated.sampler_idle_s, "async/sync_s": sync_s,
                   "async/sync_mb": sync_bytes / 2**20,
                   "async/queue_depth": float(len(self.worker.ready))}
        return ScoredRollout(list(batch), generated.rollout, scored, metrics=metrics)

    def _request(self, module: Any, index: int, problems: list[Any], ahead: int) -> None:
        """Ask for batch ``index``, seeded as the synchronous trainer seeds the rollout of that step."""
        prompts = [p.prompt for p in problems]
        ids, mask = module.encode_prompts(prompts)
        G = module.hparams.num_generations
        step = int(module.global_step) + ahead * self.steps_per_rollout
        seed = rollout_seed(module.sampling_seed_base(), step, module.global_rank)
        version = min_version(index, self.config.max_staleness, self.first_version)
        self.worker.request(GenerateRequest(index, ids.cpu().repeat_interleave(G, 0), mask.cpu().repeat_interleave(G, 0),
                                            seed, version))
        self.requested[index] = prompts

    def teardown(self, module: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def state_dict(self) -> dict[str, Any]:
        return {"async_rollouts_age_counts": {int(a): int(n) for a, n in self.age_counts.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.age_counts.update({int(a): int(n) for a, n in state.get("async_rollouts_age_counts", {}).items()})
