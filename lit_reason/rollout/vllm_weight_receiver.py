"""The trainer's weights into a served vLLM over a gloo process group (CPU, or any network).

Two halves of one protocol, both torch only:

* :class:`WeightReceiver` runs inside the vLLM server, loaded as vLLM's worker extension
  (``vllm serve ... --worker-extension-cls lit_reason.rollout.vllm_weight_receiver.WeightReceiver``,
  so the server's machine needs lit-reason installed) and called through the server's
  ``/collective_rpc`` endpoint (``VLLM_SERVER_DEV_MODE=1``). It joins a gloo group the trainer
  hosts, then receives each push tensor by tensor straight into the worker's ``reload_weights``
  (the colocated engine's in-place reload), so no file is written on either side.
* :func:`host_store` and :func:`gloo_group` are how both sides join: the trainer is rank 0 and
  hosts the rendezvous store, each vLLM worker is rank ``1 + its rank``.

Why not vLLM's own ``init_weight_transfer_engine`` / ``update_weights``: its backends (nccl, ipc and
the others it registers) need CUDA; this one is the same idea on gloo, which runs on CPUs and
across machines. On GPUs the nccl backend is the one to use (see docs/async_rollouts.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist


def host_store(host: str, timeout_s: float) -> dist.TCPStore:
    """The rendezvous store the trainer (rank 0) hosts, on any free port (``store.port``)."""
    return dist.TCPStore(host, 0, is_master=True, timeout=timedelta(seconds=timeout_s), wait_for_workers=False)


def gloo_group(store: dist.Store, rank: int, world_size: int, own_address: str, timeout_s: float) -> dist.ProcessGroup:
    """A gloo process group of its own (not the default group, so neither side's is touched),
    reachable at ``own_address`` (an address of this machine the other side can reach)."""
    options = dist.ProcessGroupGloo._Options()
    options._devices = [dist.ProcessGroupGloo.create_device(hostname=own_address)]
    options._timeout = timedelta(seconds=timeout_s)
    return dist.ProcessGroupGloo(store, rank, world_size, options)  # the caller keeps ``store`` alive with it


def broadcast(group: dist.ProcessGroup, tensor: torch.Tensor) -> None:
    """Rank 0's ``tensor`` into every rank's ``tensor`` (in place)."""
    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([tensor], options).wait()


def tensor_meta(weights: dict[str, torch.Tensor]) -> str:
    """What the receiver allocates before each broadcast: ``[[name, dtype, shape], ...]`` as JSON."""
    return json.dumps([[name, str(t.dtype).removeprefix("torch."), list(t.shape)] for name, t in weights.items()])


class WeightReceiver:
    """vLLM worker extension: its methods become the worker's, called by name via ``collective_rpc``
    (the HTTP endpoint passes string arguments, hence the conversions)."""

    def lit_reason_rank(self) -> int:
        """This worker's rank (the trainer counts the answers to size the group)."""
        return int(getattr(self, "rank", 0))

    def lit_reason_join(self, host: str, port: str, world_size: str, own_address: str, timeout_s: str) -> int:
        """Join the trainer's gloo group (store at ``host:port``; blocks until every rank has joined)."""
        store = dist.TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=float(timeout_s)))
        self._lit_reason_store = store
        self._lit_reason_group = gloo_group(store, 1 + self.lit_reason_rank(), int(world_size), own_address,
                                            float(timeout_s))
        return self.lit_reason_rank()

    def lit_reason_receive(self, meta: str) -> int:
        """Receive one push (tensors in ``meta``'s order) into the model; the number of tensors."""
        from lit_reason.rollout.vllm_engine import _refresh_lm_heads

        group = self._lit_reason_group
        entries = json.loads(meta)

        def stream() -> Iterator[tuple[str, torch.Tensor]]:
            for name, dtype, shape in entries:
                tensor = torch.empty(shape, dtype=getattr(torch, dtype))
                broadcast(group, tensor)
                yield name, tensor

        self.reload_weights(weights_iterator=stream())
        _refresh_lm_heads(self)
        return len(entries)
