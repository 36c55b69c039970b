"""A served vLLM (``vllm serve``, on this machine or another) as a rollout engine: prompts go as
token ids to its OpenAI-compatible ``/v1/completions``, the trainer's weights go over gloo.

Generation: one request per unique prompt (``n`` = its group size, a seed drawn from the step's
generator), sent together so the server batches them; the completion's token ids
(``return_token_ids``) and the sampled tokens' log-probs (``logprobs: 0``, the server started with
``--logprobs-mode processed_logprobs``) come back and are cut at EOS / stop strings as the built-in
engine cuts them (:func:`lit_reason.rollout.vllm_engine.assemble_rollout`).

Weights (:meth:`VLLMServerEngine.load`): ``/pause`` (in-flight requests finish first), the
tensors broadcast over a gloo group into the server's workers
(:mod:`lit_reason.rollout.vllm_weight_receiver`, through ``/collective_rpc``), ``/reset_prefix_cache``
(cached prefixes were computed with the old weights), ``/resume``. The server needs
``VLLM_SERVER_DEV_MODE=1`` (those endpoints) and the receiver as its worker extension; the command
is in docs/async_rollouts.md.

Every HTTP call and every broadcast has a deadline (``timeout_s``); a failure is one line naming
the server and the call.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lit_reason.rollout.contract import Rollout, SamplingConfig
from lit_reason.rollout.stop_strings import StopStringMatcher
from lit_reason.rollout.vllm_engine import assemble_rollout, unique_prompt_runs
from lit_reason.rollout.vllm_weight_receiver import broadcast, gloo_group, host_store, tensor_meta

RECEIVER = "lit_reason.rollout.vllm_weight_receiver.WeightReceiver"


@dataclass
class VLLMServer:
    """YAML ``model.async_rollouts.server: {url: http://host:8000}``: sample from a vLLM server.

    Args:
        url: the server's base URL (scheme, host, port).
        model: the served model's name; default: the server's only model (``/v1/models``).
        sync_host: this machine's address as the server reaches it (the weights' gloo group);
            default: the address this machine uses to reach the server.
    """

    url: str
    model: str | None = None
    sync_host: str | None = None

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.port is None:
            raise ValueError(f"model.async_rollouts.server.url={self.url!r} is not a server address: write it as "
                             "http://HOST:PORT (the port `vllm serve` listens on, 8000 by default)")
        self.url = self.url.rstrip("/")

    @property
    def host(self) -> str:
        return urllib.parse.urlparse(self.url).hostname or ""


class ServerError(RuntimeError):
    """The server failed or did not answer in time: one line naming it and the call."""


def call_server(url: str, path: str, timeout_s: float, body: dict | None = None, method: str = "POST") -> Any:
    """``path`` on the server at ``url`` with a JSON body; its JSON answer (None when empty)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # the user's own server
            text = response.read()
    except urllib.error.HTTPError as err:
        detail = " ".join(err.read().decode("utf-8", "replace").split())[:300]
        raise ServerError(f"vLLM server {url} answered {path} with HTTP {err.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as err:  # refused, reset, timed out
        reason = getattr(err, "reason", err)
        raise ServerError(f"vLLM server {url} did not answer {path} (within {timeout_s:g}s): {reason}") from None
    return json.loads(text) if text.strip() else None


def served_model(server: VLLMServer, timeout_s: float) -> str:
    """The model to ask for: the configured one, checked against what the server serves."""
    models = [m["id"] for m in (call_server(server.url, "/v1/models", timeout_s, method="GET") or {}).get("data", [])]
    if server.model is not None and server.model not in models:
        raise ServerError(f"vLLM server {server.url} does not serve model.async_rollouts.server.model="
                          f"{server.model!r}; it serves {models}")
    if server.model is None and len(models) != 1:
        raise ServerError(f"vLLM server {server.url} serves {models}: name one with model.async_rollouts.server.model")
    return server.model or models[0]


class VLLMServerEngine:
    """The rollout contract on a vLLM server (see the module docstring).

    Args:
        server: :class:`VLLMServer`.
        tokenizer: the policy's tokenizer (decoding, stop strings).
        config: a :class:`SamplingConfig`.
        eos_ids, pad_id: the policy's (:func:`lit_reason.rollout.contract.end_of_sequence_ids`).
        timeout_s: deadline of every call (one generation, one push).
    """

    def __init__(self, server: VLLMServer, tokenizer, config: SamplingConfig, eos_ids: list[int], pad_id: int,
                 timeout_s: float) -> None:
        self.server, self.tokenizer, self.config = server, tokenizer, config
        self.eos_ids, self.pad_id, self.timeout_s = list(eos_ids), int(pad_id), float(timeout_s)
        self.stops = StopStringMatcher(tokenizer, config.stop_strings)
        self.group = self.store = None
        self.model_name = served_model(server, timeout_s)
        self.call("/resume")  # a run that died during a push left the server paused
        self.bytes_pushed = 0

    # -- HTTP ---------------------------------------------------------------------------------
    def call(self, path: str, body: dict | None = None, method: str = "POST") -> Any:
        return call_server(self.server.url, path, self.timeout_s, body, method)

    def rpc(self, method: str, **kwargs: Any) -> list:
        """``method`` of the receiver on every server worker (``/collective_rpc``); their answers."""
        body = {"method": method, "kwargs": {k: str(v) for k, v in kwargs.items()}, "timeout": self.timeout_s}
        return (self.call("/collective_rpc", body) or {}).get("results", [])

    # -- generation -----------------------------------------------------------------------------
    def request_body(self, prompt: list[int], n: int, seed: int | None) -> dict:
        cfg = self.config
        return {
            "model": self.model_name, "prompt": prompt, "n": n, "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k if cfg.top_k > 0 else -1,
            "min_p": cfg.min_p, "seed": seed, "logprobs": 0, "return_token_ids": True,
            # stop strings are cut here (assemble_rollout), with the trainer's tokenizer, as the engines cut them
            "stop_token_ids": self.eos_ids, "skip_special_tokens": False,
        }

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, prompt_mask: Tensor, generator: torch.Generator | None = None) -> Rollout:
        """One completion per row; rows repeating a prompt are one request with ``n`` = the repeats."""
        start = time.perf_counter()
        runs = unique_prompt_runs(prompt_ids.cpu(), prompt_mask.cpu())
        base = None
        if generator is not None:
            base = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        greedy = self.config.greedy  # vLLM refuses n > 1 without sampling: one request, its copies identical
        bodies = [self.request_body(ids, 1 if greedy else n, None if base is None else base + i)
                  for i, (ids, n) in enumerate(runs)]
        with ThreadPoolExecutor(max_workers=min(len(bodies), 64) or 1) as pool:
            answers = list(pool.map(lambda body: self.call("/v1/completions", body), bodies))
        completions = []
        for answer, (_, n) in zip(answers, runs):
            choices = sorted(answer["choices"], key=lambda c: c["index"])
            for choice in (choices * n if greedy else choices):
                ids = list(choice.get("token_ids") or [])
                logps = [float(v) for v in ((choice.get("logprobs") or {}).get("token_logprobs") or [])]
                if len(logps) != len(ids):
                    raise ServerError(f"vLLM server {self.server.url} returned {len(ids)} tokens but {len(logps)} "
                                      "log-probs: is it vLLM 0.32 with return_token_ids?")
                completions.append((ids, logps))
        return assemble_rollout(prompt_ids, prompt_mask, completions, self.eos_ids, self.stops, self.pad_id,
                                self.tokenizer, time.perf_counter() - start)

    # -- weights --------------------------------------------------------------------------------
    def sync_host(self) -> str:
        """This machine's address as the server reaches it."""
        if self.server.sync_host:
            return self.server.sync_host
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # no packet is sent
            probe.connect((socket.gethostbyname(self.server.host), 9))
            return probe.getsockname()[0]

    def _beside(self, call) -> tuple[threading.Thread, dict]:
        """Start ``call`` (a blocking HTTP call) in a thread while this thread does the other side."""
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["value"] = call()
            except BaseException as err:  # noqa: BLE001  (re-raised in the caller's thread)
                result["error"] = err

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, result

    def _joined(self, thread: threading.Thread, result: dict, what: str, timeout_s: float | None = None) -> Any:
        thread.join(self.timeout_s if timeout_s is None else timeout_s)
        if "error" in result:
            raise result["error"]
        if thread.is_alive():
            raise ServerError(f"vLLM server {self.server.url} did not finish {what} within {self.timeout_s:g}s")
        return result.get("value")

    def _while(self, thread: threading.Thread, result: dict, what: str, work) -> Any:
        """``work()`` here while the call runs there; a failure of the call wins over the gloo
        error it causes on this side (the server's reason is the one to print)."""
        try:
            work()
        except Exception:
            self._joined(thread, result, what, timeout_s=5.0)
            raise
        return self._joined(thread, result, what)

    def connect(self) -> None:
        """Form the gloo group with every server worker (once)."""
        workers = len(self.rpc("lit_reason_rank"))
        if workers < 1:
            raise ServerError(f"vLLM server {self.server.url} has no {RECEIVER} worker extension: start it with "
                              f"--worker-extension-cls {RECEIVER}")
        own = self.sync_host()
        store = self.store = host_store(own, self.timeout_s)
        thread, result = self._beside(lambda: self.rpc("lit_reason_join", host=own, port=store.port,
                                                       world_size=workers + 1, own_address=self.server.host,
                                                       timeout_s=self.timeout_s))

        def join() -> None:
            self.group = gloo_group(store, 0, workers + 1, own, self.timeout_s)

        self._while(thread, result, "joining the weights' gloo group", join)

    def load(self, weights: dict[str, Tensor]) -> None:
        """Push ``weights`` (Hugging Face names, full tensors) into the server between two generations."""
        if self.group is None:
            self.connect()
        self.call("/pause?mode=wait")
        meta = tensor_meta(weights)
        thread, result = self._beside(lambda: self.rpc("lit_reason_receive", meta=meta))

        def send() -> None:
            for tensor in weights.values():
                broadcast(self.group, tensor.contiguous())
                self.bytes_pushed += tensor.numel() * tensor.element_size()

        self._while(thread, result, "receiving the weights", send)
        self.call("/reset_prefix_cache")
        self.call("/resume")
