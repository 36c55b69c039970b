"""Worker for tests/test_vllm_ranks.py: one colocated vLLM engine per rank on 2 CPU gloo ranks.

    python tests/vllm_ranks_worker.py ddp       MODEL_DIR OUT_DIR   # GRPO fit, Trainer(strategy="ddp")
    python tests/vllm_ranks_worker.py fsdp2_fit MODEL_DIR OUT_DIR   # GRPO fit, ModelParallelStrategy (FSDP2)
    python tests/vllm_ranks_worker.py fsdp1_fit MODEL_DIR OUT_DIR   # GRPO fit, FSDPStrategy (FSDP1) on CPU
    torchrun --standalone --nproc_per_node 2 tests/vllm_ranks_worker.py fsdp1 MODEL_DIR OUT_DIR
                                                  # FullyShardedDataParallel (flat params), no Lightning

Each rank writes ``OUT_DIR/rank{r}.pt`` (log-prob gaps before / after the last sync, its full
weights, its rollouts); the test compares the ranks. Lightning re-executes this script for rank 1
and vLLM may spawn helpers, so it is a script with a ``__main__`` guard.
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROMPT, COMPLETION = "3+4=", "7 and 8"  # the fixed completion both engines score
STEPS = 2  # optimizer steps (k)
VLLM = {"kv_cache_gib": 0.0625, "max_num_seqs": 8, "sync_every": 1}


def gaps(session, model, tok) -> tuple[float, float]:
    """max |vLLM - trainer| log-prob of the fixed completion before and right after a sync."""
    from tests.test_vllm_engine import trainer_logprobs, vllm_logprobs

    prompt = tok(PROMPT, add_special_tokens=False)["input_ids"]
    completion = tok(COMPLETION, add_special_tokens=False)["input_ids"]
    reference = trainer_logprobs(model, prompt, completion)
    stale = (vllm_logprobs(session.llm, prompt, completion) - reference).abs().max().item()
    session.sync()
    fresh = (vllm_logprobs(session.llm, prompt, completion) - reference).abs().max().item()
    return stale, fresh


class Scores:
    """The trainer's forward as ``model(input_ids=...)``: under Lightning's FSDP1 through the root
    unit's forward (the root holds the embeddings), elsewhere the policy itself."""

    def __init__(self, trainer, module):
        self.trainer, self.module = trainer, module

    def __call__(self, input_ids):
        strategy = self.trainer.strategy
        if type(strategy).__name__ == "CPUFSDPStrategy":
            return strategy._forward_redirection(strategy.model, self.module, "policy_scores", input_ids)
        return self.module.policy(input_ids=input_ids)


def grpo_class():
    """GRPO with a forward for :class:`Scores`; under ModelParallelStrategy (``fsdp2_fit``) GRPO's
    own ``configure_model`` shards the policy (each decoder layer, then the whole policy)."""
    from lit_reason.modules import GRPO

    class TestGRPO(GRPO):
        def policy_scores(self, input_ids):
            return self.policy(input_ids=input_ids)

    return TestGRPO


def cpu_fsdp1_strategy(unit_classes, **options):
    """Lightning's FSDPStrategy on CPU, for this test only: Lightning refuses accelerator="cpu" for
    that exact class and passes FSDP1 ``device_id=None``, which FSDP1 refuses on a machine without an
    accelerator; FSDP1 itself runs on CPU with ``device_id=cpu``."""
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed import fsdp
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    class CPUFSDPStrategy(FSDPStrategy):
        def _setup_model(self, model):
            real = fsdp.FullyShardedDataParallel

            class OnCPU(real):
                def __init__(self, *args, device_id=None, **kwargs):
                    super().__init__(*args, device_id=torch.device("cpu"), **kwargs)

            fsdp.FullyShardedDataParallel = OnCPU  # Lightning imports it from there inside _setup_model
            try:
                return super()._setup_model(model)
            finally:
                fsdp.FullyShardedDataParallel = real

    return CPUFSDPStrategy(auto_wrap_policy=ModuleWrapPolicy(unit_classes), process_group_backend="gloo", **options)


def fit(mode: str, model_dir: str, out: str) -> None:
    """A GRPO fit with rollout_engine=vllm on 2 CPU ranks: ``ddp``, ``fsdp2_fit`` or ``fsdp1_fit``."""
    import lightning as L

    from datamodules import ToyDataModule
    from lit_reason.rollout.weight_sync import inference_weights

    L.seed_everything(0)
    module = grpo_class()(model=model_dir, num_generations=4, max_new_tokens=8, lr=2e-2, prompt_format="plain",
                              max_prompt_length=48, rollout_engine="vllm", sampling_seed=11, vllm=VLLM,
                              rollout_correction={"level": "token", "cap": 2.0})
    if mode == "fsdp2_fit":
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    elif mode == "fsdp1_fit":
        strategy = cpu_fsdp1_strategy({type(module.policy.model.layers[0])})  # as configs/scale/fsdp.yaml
    else:
        strategy = "ddp"
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", devices=2, strategy=strategy, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    data = ToyDataModule(batch_size=2, val_size=0)
    start = time.perf_counter()
    trainer.fit(module, data)
    fit_seconds = time.perf_counter() - start
    session, policy = module._vllm_session, module.policy.eval()
    result = {"global_step": trainer.global_step, "syncs": session.syncs, "synced_step": session.synced_step,
              "kl_max": float(trainer.callback_metrics["rollout_correction/kl_max"]),
              "backend": session.llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend,
              "fit_seconds": fit_seconds, "dtensors": sum(type(p).__name__ == "DTensor" for p in policy.parameters()),
              "parameters": len(list(policy.parameters())), "strategy": type(trainer.strategy).__name__,
              "fsdp1_units": sum(type(m).__name__ in ("FullyShardedDataParallel", "OnCPU")
                                 for m in trainer.strategy.model.modules())}
    result["stale"], result["fresh"] = gaps(session, Scores(trainer, module), module.tokenizer)
    # the same two prompts on every rank: each rank's (seed, step, rank) generator, twice
    problems = [data.train_dataset()[i] for i in range(2)]
    first = module.generate(problems, generator=module.sampling_generator())
    again = module.generate(problems, generator=module.sampling_generator())
    result["rollout"], result["rollout_again"] = first.completion_ids.tolist(), again.completion_ids.tolist()
    result["weights"] = dict(inference_weights(policy, trainer.strategy.model))  # FSDP: gathered
    torch.save(result, os.path.join(out, f"rank{trainer.global_rank}.pt"))
    session.close()


class Holder(torch.nn.Module):
    """Stands in for the LightningModule that FSDP1's root unit wraps around the policy."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, input_ids):
        return self.policy(input_ids=input_ids)


def fsdp1(model_dir: str, out: str) -> None:
    """FSDP1 without Lightning (its FSDPStrategy refuses a CPU accelerator): each rank trains on its
    own batch, then its vLLM engine receives the weights one FSDP unit at a time."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_reason.rollout.vllm_engine import build_vllm_session

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    layers = list(model.model.layers)
    # as Lightning's FSDPStrategy does it: the root unit wraps a holder of the policy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    policy = model
    trained = FSDP(Holder(policy), auto_wrap_policy=ModuleWrapPolicy({type(layers[0])}), use_orig_params=False,
                   device_id=torch.device("cpu"))  # without it FSDP1 refuses a machine with no accelerator
    session = build_vllm_session(policy, tok, VLLM, 48, 8, optimizer_steps=lambda: steps, weights_root=lambda: trained)
    steps = 0
    session.start()  # vLLM on every rank, filled with the (gathered) initial weights
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own batch: DDP-style gradient averaging matters
    for steps in range(1, STEPS + 1):
        ids = torch.randint(3, len(tok), (2, 12), generator=g)
        loss = torch.nn.functional.cross_entropy(trained(input_ids=ids).logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if steps < STEPS:
            session.prepare()  # the step's sync (sync_every=1), as a rollout would do it
    result = {"syncs": session.syncs, "synced_step": session.synced_step,
              "backend": session.llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend}
    start = time.perf_counter()
    result["stale"], result["fresh"] = gaps(session, trained, tok)
    result["sync_seconds"] = time.perf_counter() - start
    from lit_reason.rollout.weight_sync import fsdp1_units, inference_weights

    def unsharded() -> int:  # layer units whose full flat parameter is allocated right now (FSDP1
        # leaves the root unit unsharded after a forward itself)
        return sum(u._handle.flat_param._full_param_padded.untyped_storage().size() > 0
                   for u in fsdp1_units(trained) if u is not trained)

    result["weights"], result["unsharded_units"] = {}, []
    for name, tensor in inference_weights(policy, trained):
        result["weights"][name] = tensor
        result["unsharded_units"].append(unsharded())
    result["units"] = len(fsdp1_units(trained))
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    session.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    which, model_dir, out = sys.argv[1:4]
    if which in ("ddp", "fsdp2_fit", "fsdp1_fit"):
        fit(which, model_dir, out)
    elif which == "fsdp1":
        fsdp1(model_dir, out)
    else:
        sys.exit(f"unknown mode {which!r}: ddp | fsdp2_fit | fsdp1_fit | fsdp1")
