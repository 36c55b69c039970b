"""One colocated vLLM engine per rank on 2 CPU gloo ranks: GRPO fits under DDP, FSDP2 and FSDP1, and FSDP1 alone.

After k=2 optimizer steps (``sync_every: 1``) each rank's engine lags one step until the next
sync: the log-probs of a fixed completion differ from the trainer's by > 1e-3, and right after
the sync they agree within 1e-4 (float32; vLLM's CPU kernels vs the HF forward). The ranks hold
identical weights, and the gathered ones (one FSDP2 parameter / one FSDP1 unit at a time) are the
trained ones: FSDP2's equal DDP's (same fit, same rollouts), FSDP1's a one-process run's.

The rank processes run in tests/vllm_ranks_worker.py (a script: Lightning re-executes it for
rank 1, torchrun starts both FSDP1 ranks), each with a timeout so a hang cannot stall CI. The
one-rank tests at the bottom (no vLLM) run everywhere.
"""

import contextlib
import importlib.util
import os
from unittest import mock
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_rollout_contract import head32_policy, saved_head32_policy

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here (runs in .venv-vllm: .ci/vllm_lane.sh)")
WORKER = Path(__file__).with_name("vllm_ranks_worker.py")
TIMEOUT_S = 240  # each 2-rank run takes 35-50 s on the 2-core VM


def kill_tree(pid: int) -> None:
    """SIGKILL a worker, its process group and every descendant (torchrun's ranks run in their own sessions)."""
    import psutil  # a vLLM dependency

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_ranks(args: list[str], tmp_path: Path) -> list[dict]:
    """Run the worker on 2 ranks and return each rank's result; kills the whole process group on timeout."""
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK",
                                                            "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"  # two ranks on two cores
    proc = subprocess.Popen(args, cwd=WORKER.parent.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, _ = proc.communicate()
        pytest.fail(f"2-rank run timed out after {TIMEOUT_S}s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-4000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return saved_head32_policy(tmp_path_factory.mktemp("head32"))


def check_engines_follow_the_trainer(ranks: list[dict]) -> None:
    for rank, r in enumerate(ranks):
        assert r["backend"] == "external_launcher", rank
        assert r["syncs"] == 2 and r["synced_step"] == 1, (rank, r["syncs"], r["synced_step"])  # start, after step 1
        assert r["stale"] > 1e-3, f"rank {rank}: the engine should lag one optimizer step (max |diff| {r['stale']:.2e})"
        assert r["fresh"] < 1e-4, f"rank {rank}: after the sync vLLM should score like the trainer ({r['fresh']:.2e})"


@pytest.fixture(scope="module")
def ddp_ranks(model_dir, tmp_path_factory):
    """Lightning Trainer(strategy="ddp", accelerator="cpu", devices=2) fitting GRPO with rollout_engine=vllm."""
    out = tmp_path_factory.mktemp("ddp")
    return run_ranks([sys.executable, str(WORKER), "ddp", str(model_dir), str(out)], out)


def check_grpo_fit(ranks: list[dict]) -> None:
    check_engines_follow_the_trainer(ranks)
    for r in ranks:
        assert r["global_step"] == 2
        assert r["kl_max"] < 1e-3  # sampler and trainer agreed when the rollouts were drawn
        assert r["rollout"] == r["rollout_again"]  # the (seed, step, rank) generator reproduces a rollout
    assert set(ranks[0]["weights"]) == set(ranks[1]["weights"])
    assert all(torch.equal(t, ranks[1]["weights"][n]) for n, t in ranks[0]["weights"].items())  # ranks identical
    assert ranks[0]["rollout"] != ranks[1]["rollout"]  # same prompts, same weights: per-rank seeds differ


@needs_vllm
@pytest.mark.vllm
def test_ddp_each_rank_engine_follows_its_trainer(ddp_ranks):
    check_grpo_fit(ddp_ranks)
    assert all(r["dtensors"] == 0 for r in ddp_ranks)


@needs_vllm
@pytest.mark.vllm
def test_fsdp2_fit_gathers_each_parameter_into_each_rank_engine(model_dir, tmp_path, ddp_ranks):
    """The same GRPO fit with the policy sharded by FSDP2 (ModelParallelStrategy, fully_shard per
    decoder layer and the policy): every rank's engine gets the gathered weights, which are DDP's."""
    ranks = run_ranks([sys.executable, str(WORKER), "fsdp2_fit", str(model_dir), str(tmp_path)], tmp_path)
    check_grpo_fit(ranks)
    assert all(r["dtensors"] == r["parameters"] > 0 for r in ranks)  # every parameter was a shard
    assert set(ranks[0]["weights"]) == set(ddp_ranks[0]["weights"])  # HF names, every parameter
    for name, tensor in ddp_ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[0]["weights"][name], tensor, atol=1e-5, rtol=0, msg=name)
    assert [r["rollout"] for r in ranks] == [r["rollout"] for r in ddp_ranks]  # same weights, same seeds


@needs_vllm
@pytest.mark.vllm
def test_fsdp1_fit_under_lightning_equals_ddp(model_dir, tmp_path, ddp_ranks):
    """The same GRPO fit under Lightning's FSDPStrategy (forced onto CPU, a unit per decoder layer as
    configs/scale/fsdp.yaml): the backward inside the root unit's forward works (lit_reason.strategies.fsdp1),
    every rank's engine follows, and the weights are DDP's."""
    ranks = run_ranks([sys.executable, str(WORKER), "fsdp1_fit", str(model_dir), str(tmp_path)], tmp_path)
    check_grpo_fit(ranks)
    assert all(r["strategy"] == "CPUFSDPStrategy" and r["fsdp1_units"] == 3 for r in ranks)  # root + 2 layers
    for name, tensor in ddp_ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[0]["weights"][name], tensor, atol=1e-5, rtol=0, msg=name)
    assert [r["rollout"] for r in ranks] == [r["rollout"] for r in ddp_ranks]


def one_process_reference(model_dir: Path, steps: int = 2) -> dict[str, torch.Tensor]:
    """What the FSDP1 worker trains: SGD on the mean of both ranks' losses (FSDP averages gradients)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    vocab = model.config.vocab_size
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    gens = [torch.Generator().manual_seed(100 + r) for r in range(2)]
    for _ in range(steps):
        losses = []
        for g in gens:
            ids = torch.randint(3, vocab, (2, 12), generator=g)
            logits = model(input_ids=ids).logits
            losses.append(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))
        (sum(losses) / 2).backward()
        optimizer.step()
        optimizer.zero_grad()
    return {n: p.detach() for n, p in model.named_parameters()}


@needs_vllm
@pytest.mark.vllm
def test_fsdp1_flat_parameters_reach_each_rank_engine_one_unit_at_a_time(model_dir, tmp_path):
    """FSDP1 (FullyShardedDataParallel, flat parameters, the root unit around a holder of the policy
    as Lightning's FSDPStrategy wraps the LightningModule), torchrun on 2 gloo ranks."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ranks = run_ranks(torchrun + [str(WORKER), "fsdp1", str(model_dir), str(tmp_path)], tmp_path)
    check_engines_follow_the_trainer(ranks)
    expected = one_process_reference(model_dir)
    for rank, r in enumerate(ranks):
        assert set(r["weights"]) == set(expected), rank  # HF names, every parameter, no FSDP prefixes
        for name, tensor in expected.items():
            torch.testing.assert_close(r["weights"][name], tensor, atol=1e-5, rtol=0, msg=f"rank {rank} {name}")
    assert all(torch.equal(ranks[0]["weights"][n], ranks[1]["weights"][n]) for n in expected)
    for r in ranks:  # while a layer's tensors stream, that layer's unit and no other is unsharded
        assert r["units"] == 3  # the root and the 2 decoder layers
        assert r["unsharded_units"] == [int(n.startswith("model.layers.")) for n in r["weights"]]


# ---------------------------------------------------------------- everywhere
@pytest.fixture
def one_rank_group(tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("use_orig_params", [False, True])
def test_fsdp1_units_stream_under_hf_names(one_rank_group, use_orig_params):
    """FSDP1 on one gloo rank, root unit around a holder (as Lightning wraps the LightningModule),
    flat parameters either way: the stream is the policy's weights, HF names, LoRA merged."""
    peft = pytest.importorskip("peft")
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from lit_reason.rollout.weight_sync import fsdp1_units, inference_weights

    model, _ = head32_policy(seed=3)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], lora_dropout=0.0))
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_()
    if not use_orig_params:
        wrapped.requires_grad_(True)  # a flat parameter cannot mix frozen and trained tensors
    expected = {n: t.clone() for n, t in dict(inference_weights(wrapped)).items()}  # unwrapped: merged, HF names
    holder = torch.nn.Module()
    holder.policy = wrapped
    layer = type(model.model.layers[0])
    root = FSDP(holder, auto_wrap_policy=ModuleWrapPolicy({layer}), use_orig_params=use_orig_params,
                device_id=torch.device("cpu"))
    assert len(fsdp1_units(root)) == 1 + len(model.model.layers)
    if not use_orig_params:  # the policy's own parameters are gone: only the layers' flat parameters are left
        assert all("_flat_param" in n for n, _ in wrapped.named_parameters())
    streamed = dict(inference_weights(wrapped, root))
    assert set(streamed) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(streamed[name], tensor, atol=1e-6, rtol=0, msg=name)
    with pytest.raises(ValueError, match="does not contain the policy"):
        list(inference_weights(head32_policy()[0], root))


def test_fsdp1_sync_inside_the_root_forward_is_one_line(one_rank_group):
    """Lightning runs training_step inside the root unit's forward, where FSDP1 cannot gather: the
    stream says where to sync instead (GRPO syncs in on_train_batch_start)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from lit_reason.rollout.weight_sync import inference_weights

    model, _ = head32_policy()

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = model

        def forward(self):
            return dict(inference_weights(self.policy, root))

    root = FSDP(Holder(), auto_wrap_policy=ModuleWrapPolicy({type(model.model.layers[0])}),
                device_id=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="inside an FSDP forward.*on_train_batch_start"):
        root()


def test_trainer_process_group_survives_engine_teardown(one_rank_group, monkeypatch):
    """vLLM's shutdown destroys the default process group; under an external launcher that group
    is the trainer's, so the session's teardown keeps it (and still destroys vLLM's own groups).
    vLLM's launcher reads RANK, which Lightning's DDP launcher does not set: filled from the group."""
    import torch.distributed as dist

    from lit_reason.rollout.vllm_engine import (
        _keeping_default_process_group,
        _torchrun_env,
    )

    destroyed = []
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: destroyed.append(group))
    own = dist.new_group([0])
    with _keeping_default_process_group():
        dist.destroy_process_group(own)  # a group vLLM built: destroyed
        dist.destroy_process_group()  # the trainer's: kept
        dist.destroy_process_group(dist.GroupMember.WORLD)  # the same, named
    assert destroyed == [own]
    dist.destroy_process_group()  # outside the block: untouched
    assert destroyed == [own, None]
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    with mock.patch.dict(os.environ):  # what _torchrun_env sets must not outlive the test
        _torchrun_env(0)
        assert os.environ["RANK"] == "0" and os.environ["WORLD_SIZE"] == "1"
