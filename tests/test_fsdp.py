"""GRPO under FSDP2 (ModelParallelStrategy, GRPO.configure_model shards) and FSDP1 (FSDPStrategy,
forced onto CPU for the test) on 2 gloo CPU ranks: the same parameters as one process training on
both ranks' rollouts, within 1e-5.

The fit is tests/test_ddp.py's: fixed rollouts (each rank its half of the groups), beta=0.04 (the
frozen reference sharded too), AdamW, gradient clipping that binds (max_grad_norm 0.05 under a norm
of ~1.7), 2 micro-batches per rank and num_iterations=2 (two backwards and two optimizer steps
inside one training_step), so a wrong global norm, a missing gradient reduction or stale gathered
weights show in the weights. The
ranks run in tests/fsdp_grpo_worker.py (Lightning re-executes it for rank 1), each run in its own
process group under a timeout so a hang cannot stall CI.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

WORKER = Path(__file__).with_name("fsdp_grpo_worker.py")
TIMEOUT_S = 120  # a 2-rank run takes ~15 s on the 2-core VM


def run_worker(mode: str, out: Path, segfault_retries: int = 0, returncode: int = 0) -> list[dict]:
    """The worker's 2 ranks (or 1); ``segfault_retries``: how often a run whose rank 0 died of
    SIGSEGV is started again (a crash inside gloo on CPU, not a wrong result; see its caller);
    ``returncode``: the worker's expected exit status."""
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK",
                                                            "WORLD_SIZE", "NODE_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen([sys.executable, str(WORKER), mode, str(out)], cwd=WORKER.parent.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and the rank Lightning launched
        log, _ = proc.communicate()
        pytest.fail(f"{mode} run timed out after {TIMEOUT_S}s:\n{log[-3000:]}")
    if proc.returncode == -signal.SIGSEGV and segfault_retries > 0:
        print(f"{mode}: a rank died of SIGSEGV; running it again ({segfault_retries} retry left)", file=sys.stderr)
        shutil.rmtree(out)
        out.mkdir()
        return run_worker(mode, out, segfault_retries - 1, returncode)
    assert proc.returncode == returncode, log[-4000:]
    return [torch.load(p, weights_only=False) for p in sorted(out.glob("rank*.pt"))]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    (result,) = run_worker("single", tmp_path_factory.mktemp("single"))
    return result


def check_same_fit(ranks: list[dict], single: dict) -> None:
    from lit_reason.models.policy import load_policy

    assert len(ranks) == 2
    import lightning as L

    L.seed_everything(0)  # as the worker before building the policy
    initial = dict(load_policy("tiny").model.named_parameters())
    moved = max((single["weights"][n] - p.detach()).abs().max().item() for n, p in initial.items())
    assert moved > 1e-3  # it trained: 100x the tolerance below
    for rank, r in enumerate(ranks):
        assert r["global_step"] == single["global_step"] == 4
        assert r["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-5), rank  # the global norm, logged
        assert set(r["weights"]) == set(single["weights"]), rank  # HF names, every parameter
        for name, tensor in single["weights"].items():
            torch.testing.assert_close(r["weights"][name], tensor, atol=1e-5, rtol=0, msg=f"rank {rank} {name}")
    assert all(torch.equal(t, ranks[1]["weights"][n]) for n, t in ranks[0]["weights"].items())


def check_export(ranks: list[dict]) -> None:
    exported = ranks[0]["exported"]  # PolicyExport's directory (from_pretrained): the gathered weights
    assert set(exported) == set(ranks[0]["weights"])
    assert all(torch.equal(t, ranks[0]["weights"][n]) for n, t in exported.items())


def test_fsdp2_fit_equals_one_process(single, tmp_path):
    ranks = run_worker("fsdp2", tmp_path)
    check_same_fit(ranks, single)
    check_export(ranks)
    for r in ranks:
        assert r["dtensors"] == r["parameters"] > 0  # every policy parameter a shard
        assert r["ref_dtensors"] > 0  # the frozen reference sharded too (it has no tied head of its own)
        assert r["dtensors_again"] == r["dtensors"]  # a second configure_model left them as they were
        assert r["rollout"] == single["rollout"]  # sampling on the sharded weights draws what one process does
    # rank 0's rows ended at the first token while rank 1's decoded on: both returned (no hang), each
    # with its own rows
    assert ranks[0]["early_lengths"] == single["early_lengths"] == [1] * 4
    assert ranks[1]["early_lengths"] == [6] * 4 and ranks[1]["early_ids"] == single["rollout"]
    assert [row[0] for row in ranks[0]["early_ids"]] == [row[0] for row in single["rollout"]]


def test_fsdp1_fit_equals_one_process(single, tmp_path):
    """FSDPStrategy as configs/scale/fsdp.yaml wraps (a unit per decoder layer, the root holds the
    embeddings / norm / head): backward inside the root's forward works (lit_reason.strategies.fsdp1)."""
    check_same_fit(run_worker("fsdp1", tmp_path), single)


@pytest.mark.parametrize("strategy", ["fsdp2", "fsdp1"])
def test_resumed_from_a_sharded_checkpoint_equals_one_process(single, tmp_path, strategy):
    """Stopped after the first rollout, saved as a distributed checkpoint (a shard file per rank;
    FSDP1 with state_dict_type="sharded") and resumed into a module built from another seed: the
    policy, its frozen reference, the AdamW moments and the step all come back, so the fit ends
    where the uninterrupted one does."""
    # one fresh-clone CI run out of ~18 runs saw rank 0 die of SIGSEGV in the gloo gather after the
    # resumed fit (not reproduced in 14 runs alone or under load): one rerun; a second crash fails
    ranks = run_worker(f"{strategy}_resume", tmp_path, segfault_retries=1)
    assert sorted(p.name for p in (tmp_path / "half.ckpt").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    check_same_fit(ranks, single)
    if strategy == "fsdp2":  # FSDP1's export is not tested on the forced-CPU strategy (see the worker)
        check_export(ranks)


# ---------------------------------------------------------------- one process
@pytest.fixture
def one_rank_mesh(tmp_path):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    dist.destroy_process_group()


def under_model_parallel(module, mesh):
    from lightning.pytorch.strategies import ModelParallelStrategy

    module._trainer = SimpleNamespace(strategy=ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1),
                                      world_size=1)
    module._device_mesh = mesh
    return module


def test_decoder_layers_of_presets():
    from lit_reason.strategies.fsdp2 import decoder_layers
    from lit_reason.models.policy import load_policy

    for preset, layer in (("tiny", "Qwen2DecoderLayer"), ("tiny-llama", "LlamaDecoderLayer")):
        model = load_policy(preset).model
        found = decoder_layers(model)
        assert [type(m).__name__ for m in found] == [layer] * model.config.num_hidden_layers
        assert all(a is b for a, b in zip(found, model.model.layers))


def test_configure_model_is_a_no_op_outside_model_parallel():
    from lit_reason.modules import GRPO

    module = GRPO(model="tiny")
    before = [type(m) for m in module.modules()]
    module.configure_model()  # no trainer
    module._trainer = SimpleNamespace(strategy=SimpleNamespace())  # e.g. DDP
    module.configure_model()
    assert [type(m) for m in module.modules()] == before


def test_hrpo_gate_outside_the_policy_is_refused(one_rank_mesh):
    from lit_reason.modules import HRPO

    module = under_model_parallel(HRPO(model="tiny"), one_rank_mesh)
    with pytest.raises(ValueError, match="outside the policy.*gate.*use DDP or DeepSpeed"):
        module.configure_model()


def test_lora_policy_shards_and_scores_on_one_rank(one_rank_mesh):
    """A peft-wrapped policy: its decoder layers are found through the wrapper, every parameter
    (frozen base and trained adapters) becomes a shard, the reference stays the policy itself
    (adapters off), and a second call changes nothing; scoring runs through the gathering forward."""
    pytest.importorskip("peft")
    from lit_reason.modules import GRPO
    from tests.test_ddp import fixed_rollout

    module = under_model_parallel(GRPO(model="tiny", beta=0.04, lora={"r": 4, "alpha": 8}), one_rank_mesh)
    rollout, _ = fixed_rollout(module)
    part = rollout.select(slice(0, 4))
    mask = part.completion_mask.float()  # the chunked head (before sharding) leaves 0 outside it
    before = module.completion_scores(module.policy, part).logps.detach() * mask
    module.configure_model()
    module.configure_model()
    params = list(module.policy.parameters())
    assert all(type(p).__name__ == "DTensor" for p in params) and any(p.requires_grad for p in params)
    after = module.completion_scores(module.policy, part)
    torch.testing.assert_close(after.logps * mask, before, atol=1e-5, rtol=0)  # the full-logits path now
    (after.logps * mask).sum().backward()
    assert all(p.grad is not None for p in params if p.requires_grad)
    torch.testing.assert_close(module.reference_scores(part).logps * mask, before, atol=1e-5, rtol=0)  # B = 0 at init
