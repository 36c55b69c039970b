"""A sampler in a process of its own: the built-in engine, fed prompts and weights by the trainer.

Why a process (spawned, not forked): generation and training then run at the same time on
different cores, and the trainer's state (threads, autograd, Lightning) is not copied into it.

How weights travel without disk: the trainer owns one shared-memory tensor per parameter (created
at start, handed to the child when it is spawned). A push copies the trainer's weights (LoRA
merged, :func:`lit_reason.rollout.weight_sync.inference_weights`) into them and sends
``("weights", version)``; the child copies them into its model between two generations and acks.
The trainer writes again only after the ack, so the child never reads a half-written version.

Nothing waits forever: every wait of the trainer (:meth:`SamplerWorker.take`, the ack of a push)
polls the child's liveness and has a deadline, and ends with one line naming the worker and what
it was doing (the child writes its activity into a small shared buffer). The child polls its
parent and exits when the trainer is gone.
"""

from __future__ import annotations

import copy
import os
import pickle
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor

from lit_reason.models.lora import LoraSettings, apply_lora
from lit_reason.rollout import Rollout, RolloutEngine, SamplingConfig
from lit_reason.rollout.vllm_server import VLLMServer, VLLMServerEngine
from lit_reason.rollout.weight_sync import inference_weights

_STATUS_BYTES = 200
_POLL_S = 0.2


class SamplerWorkerError(RuntimeError):
    """A sampler worker died, crashed or stalled: one line naming it and what it was doing."""


@dataclass
class WorkerSpec:
    """What the child needs to build its engine (picklable: names, not objects).

    ``lora``: the trainer's LoRA settings, for adapter-only pushes (the child wraps a copy of its
    base with them, receives the base once, then only the trainable tensors, and merges them into
    the model it generates with). ``server``: sample
    from this vLLM server instead of a model of the child's own; ``eos`` is then the policy's
    ``(eos_ids, pad_id)`` and ``timeout_s`` bounds each call to the server."""

    name: str
    model: str
    dtype: str
    sampling: SamplingConfig
    threads: int
    lora: dict | None = None
    server: VLLMServer | None = None
    eos: tuple[list[int], int] | None = None
    timeout_s: float = 600.0

    @property
    def where(self) -> str:
        return f" on the vLLM server {self.server.url}" if self.server is not None else ""


@dataclass
class GenerateRequest:
    """Generate the rollout of batch ``index`` (G rows per prompt, already repeated) with weights
    of version ``>= min_version``, from a generator seeded with ``seed``."""

    index: int
    prompt_ids: Tensor
    prompt_mask: Tensor
    seed: int
    min_version: int


@dataclass
class Generated:
    """One batch's rollout and the version of the weights that sampled it."""

    index: int
    version: int
    rollout: Rollout
    sampler_idle_s: float  # the child's time waiting for work or weights before this batch
    started: float  # wall clock (time.time) of the generation's start and end, comparable across processes
    finished: float


def _set_status(status: Any, text: str) -> None:
    status.value = text.encode("utf-8", "replace")[: _STATUS_BYTES - 1]


def serve(spec: WorkerSpec, weights: dict[str, Tensor], requests: Any, results: Any, status: Any) -> None:
    """The child's main loop (the target of the spawned process)."""
    try:
        _serve(spec, weights, requests, results, status)
    except Exception as err:  # the trainer raises it as one line; the traceback goes to this terminal too
        traceback.print_exc(file=sys.stderr)
        doing = status.value.decode("utf-8", "replace")
        results.put(("error", f"{type(err).__name__}: {err}".splitlines()[0], doing))


def _engine(spec: WorkerSpec, weights: dict[str, Tensor]) -> tuple[Any, Callable[[list[str] | None], None]]:
    """The child's engine and how it loads the named shared tensors (None: all of them)."""
    from lit_reason.models.policy import load_policy, load_tokenizer

    if spec.server is not None:
        engine = VLLMServerEngine(spec.server, load_tokenizer(spec.model), spec.sampling, *spec.eos, spec.timeout_s)
        return engine, lambda names: engine.load(weights if names is None else {n: weights[n] for n in names})
    loaded = load_policy(spec.model, dtype=spec.dtype)
    model = loaded.model.eval().requires_grad_(False)  # what generates
    # adapter-only: a peft copy receives the base and the adapters, and the generating model gets
    # W + BA from it after each push (the trainer's merged weights, computed here, off its path)
    wrapped = apply_lora(copy.deepcopy(model), LoraSettings(**spec.lora)).requires_grad_(False) if spec.lora else None
    params = dict((wrapped or model).named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise ValueError(f"the sampler's model {spec.model!r} lacks the trainer's weights {missing[:3]}")
    generating = dict(model.named_parameters())

    def load(names: list[str] | None) -> None:
        with torch.no_grad():
            for name in weights if names is None else names:
                params[name].copy_(weights[name])
            if wrapped is not None:
                for name, merged in inference_weights(wrapped):
                    generating[name].copy_(merged)

    return RolloutEngine(model, loaded.tokenizer, spec.sampling), load


def _serve(spec: WorkerSpec, weights: dict[str, Tensor], requests: Any, results: Any, status: Any) -> None:
    results.cancel_join_thread()  # if the trainer is gone, exit without flushing what nobody will read
    torch.set_num_threads(spec.threads)
    _set_status(status, "loading the model" + spec.where)
    engine, load = _engine(spec, weights)
    parent = mp.parent_process()
    waiting: list[GenerateRequest] = []
    version: int | None = None
    idle = 0.0
    _set_status(status, "waiting for the first weights")
    while True:
        runnable = next((r for r in waiting if version is not None and version >= r.min_version), None)
        started = time.perf_counter()
        try:  # drain every message before generating: the newest weights win
            message = requests.get_nowait() if runnable is not None else requests.get(timeout=_POLL_S)
        except queue.Empty:
            message = None
        if runnable is None:
            idle += time.perf_counter() - started
        if message is None:
            if runnable is None:
                if parent is not None and not parent.is_alive():
                    return  # the trainer is gone
                continue
            waiting.remove(runnable)
            _set_status(status, f"generating batch {runnable.index} with weights v{version}{spec.where}")
            began = time.time()
            with torch.no_grad():
                rollout = engine.generate(runnable.prompt_ids, runnable.prompt_mask,
                                          torch.Generator().manual_seed(runnable.seed))
            # by value (plain pickle), not as shared-memory handles: a message must stay readable after its sender dies
            results.put(("rollout", pickle.dumps(Generated(runnable.index, version, rollout, idle, began, time.time()))))
            idle = 0.0
            _set_status(status, f"idle after batch {runnable.index} (weights v{version})")
        elif message[0] == "stop":
            return
        elif message[0] == "weights":
            _set_status(status, f"loading weights v{message[1]}{spec.where}")
            t0 = time.perf_counter()
            load(message[2])
            version = int(message[1])
            results.put(("loaded", version, time.perf_counter() - t0))
            _set_status(status, f"idle with weights v{version}")
        elif message[0] == "generate":
            waiting.append(message[1])


class SamplerWorker:
    """The trainer's handle on one sampler process (see the module docstring)."""

    def __init__(self, spec: WorkerSpec, weights: Iterable[tuple[str, Tensor]], timeout_s: float) -> None:
        ctx = mp.get_context("spawn")
        self.spec, self.timeout_s = spec, timeout_s
        self.weights = {name: t.detach().to("cpu", copy=True).share_memory_() for name, t in weights}
        self.requests, self.results = ctx.Queue(), ctx.Queue()
        self.status = ctx.Array("c", _STATUS_BYTES, lock=False)
        self.process = ctx.Process(target=serve, args=(spec, self.weights, self.requests, self.results, self.status),
                                   name=spec.name, daemon=True)
        self.ready: dict[int, Generated] = {}
        self.pushed: int | None = None  # the last version written
        self.loaded: int | None = None  # the last version the child acked
        self.load_seconds = 0.0
        self.process.start()

    @property
    def doing(self) -> str:
        return self.status.value.decode("utf-8", "replace") or "starting"

    def push(self, weights: Iterable[tuple[str, Tensor]], version: int) -> tuple[float, int]:
        """Write ``weights`` (all of the shared tensors, or some of them: adapter-only) as ``version``
        once the child has loaded the previous one; (seconds taken, bytes written)."""
        t0 = time.perf_counter()
        if self.pushed is not None:
            self._wait_for(lambda: self.loaded == self.pushed, f"the ack of weights v{self.pushed}")
        names, written = [], 0
        with torch.no_grad():
            for name, tensor in weights:
                self.weights[name].copy_(tensor.detach())
                names.append(name)
                written += tensor.numel() * tensor.element_size()
        self.requests.put(("weights", version, None if len(names) == len(self.weights) else names))
        self.pushed = version
        return time.perf_counter() - t0, written

    def request(self, request: GenerateRequest) -> None:
        self.requests.put(("generate", request))

    def take(self, index: int) -> Generated:
        """The rollout of batch ``index`` (waits for it, within the timeout); every batch that
        arrived meanwhile is kept in ``ready`` (the queue depth)."""
        self._wait_for(lambda: index in self.ready, f"batch {index}")
        while True:
            try:
                self._receive(self.results.get_nowait(), f"batch {index}")
            except queue.Empty:
                break
        return self.ready.pop(index)

    def _wait_for(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                doing = self.doing
                self.close()
                raise SamplerWorkerError(f"sampler worker {self.spec.name} (pid {self.process.pid}) stalled: no answer "
                                         f"for {self.timeout_s:g}s (model.async_rollouts.timeout_s) while the trainer "
                                         f"waited for {what}; the worker was {doing}")
            try:
                message = self.results.get(timeout=min(_POLL_S, remaining))
            except queue.Empty:
                if not self.process.is_alive():
                    doing, code = self.doing, self.process.exitcode
                    self.close()
                    how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
                    raise SamplerWorkerError(f"sampler worker {self.spec.name} (pid {self.process.pid}) died ({how}) "
                                             f"while {doing}; the trainer was waiting for {what}") from None
                continue
            self._receive(message, what)

    def _receive(self, message: tuple, what: str) -> None:
        if message[0] == "rollout":
            generated = pickle.loads(message[1])  # noqa: S301 (our own child's bytes, never model output)
            self.ready[generated.index] = generated
        elif message[0] == "loaded":
            self.loaded = message[1]
            self.load_seconds += message[2]
        elif message[0] == "error":
            self.close()
            raise SamplerWorkerError(f"sampler worker {self.spec.name} crashed while {message[2]}: {message[1]} "
                                     f"(the trainer was waiting for {what})")

    def close(self) -> None:
        """Stop the child (politely, then by force); safe to call twice."""
        if self.process.pid is None:
            return
        if self.process.is_alive():
            try:
                self.requests.put(("stop",))
            except (OSError, ValueError):
                pass
            self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        for q in (self.requests, self.results):
            q.cancel_join_thread()  # never block the trainer's exit on data the child will not read
            q.close()


def core_count() -> int:
    """Cores this process may run on (what a worker's threads are checked against)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
