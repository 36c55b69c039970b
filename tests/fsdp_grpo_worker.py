"""Worker for tests/test_fsdp.py: a 4-step GRPO fit on the fixed rollouts of tests/test_ddp.py.

    python tests/fsdp_grpo_worker.py MODE OUT_DIR     # MODE: single | fsdp2 | fsdp1 | fsdp2_resume | fsdp1_resume
                                                      #       | fsdp2_kill | fsdp1_kill | fsdp2_kill_plain

``single`` trains on the whole rollout in one process; ``fsdp2`` (ModelParallelStrategy, GRPO's
own configure_model shards) and ``fsdp1`` (FSDPStrategy forced onto CPU, as configs/scale/fsdp.yaml
wraps) on 2 gloo ranks, each rank on its half; ``*_resume`` stops after half the steps, saves a
sharded checkpoint and resumes it into a module built from another seed. Each rank writes ``OUT_DIR/rank{r}.pt``: its full
policy weights (HF names), how many parameters were shards, a sampled rollout after the fit, and
(rank 0) what the PolicyExport callback wrote.
Lightning re-executes this script for rank 1, so it is a script with a ``__main__`` guard.
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEPS = 4  # optimizer steps: 2 rollouts x num_iterations 2
# the clip binds (norm ~1.7); 2 micro-batches per rank (backward twice inside one training_step) and
# 2 optimizer steps per rollout (forwards after a backward and a step, inside the same step)
SETTINGS = dict(model="tiny", num_generations=4, max_new_tokens=6, lr=1e-3, loss_type="grpo", beta=0.04,
                max_grad_norm=0.05, micro_batch_size=4, num_iterations=2, prompt_format="plain", sampling_seed=7)


def full_weights(module, trainer) -> dict[str, torch.Tensor]:
    from lit_reason.rollout.weight_sync import inference_weights

    return {n: t.detach().clone() for n, t in inference_weights(module.policy, trainer.strategy.model)}


def main(mode: str, out: str) -> None:
    import lightning as L

    from tests.test_ddp import PROMPTS, FixedRolloutGRPO, Prompts

    L.seed_everything(0)
    module = FixedRolloutGRPO(**SETTINGS)
    devices = 1 if mode == "single" else 2

    def strategy():
        if mode.startswith("fsdp2"):
            from lightning.pytorch.strategies import ModelParallelStrategy

            return ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
        if mode.startswith("fsdp1"):
            from tests.vllm_ranks_worker import cpu_fsdp1_strategy

            # sharded checkpoints: the full state dict segfaults on this forced-CPU strategy
            return cpu_fsdp1_strategy({type(module.policy.model.layers[0])}, state_dict_type="sharded")
        return "auto"

    from callbacks.policy_export import PolicyExport

    def make_trainer(steps: int, callbacks=()) -> L.Trainer:
        return L.Trainer(max_steps=steps, accelerator="cpu", devices=devices, strategy=strategy(), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=list(callbacks))

    export = PolicyExport(dirpath=os.path.join(out, "policy"))  # gathers the shards at fit end
    # FSDP1's full state dict, which the export takes, segfaults on the forced-CPU strategy (rank 0,
    # torch 2.13): its export is not tested here
    callbacks = [] if mode.startswith("fsdp1") else [export]
    start = time.perf_counter()
    if "_kill" in mode:
        return kill_during_second_save(mode, out, make_trainer(STEPS // 2), module, Prompts(batch_size=PROMPTS // devices))
    if mode.endswith("_resume"):  # stop after the first rollout; a module from another seed resumes
        first = make_trainer(STEPS // 2)
        first.fit(module, Prompts(batch_size=PROMPTS // devices))
        checkpoint = os.path.join(out, "half.ckpt")
        first.save_checkpoint(checkpoint)  # a distributed checkpoint: a directory of shards
        L.seed_everything(1)  # the resumed fit must owe nothing to the seed the first one started from
        module = FixedRolloutGRPO(**SETTINGS)
        trainer = make_trainer(STEPS, callbacks)
        trainer.fit(module, Prompts(batch_size=PROMPTS // devices), ckpt_path=checkpoint)
    else:
        trainer = make_trainer(STEPS, callbacks)
        trainer.fit(module, Prompts(batch_size=PROMPTS // devices))
    result = {"fit_seconds": time.perf_counter() - start, "global_step": trainer.global_step,
              "grad_norm": float(trainer.callback_metrics["grad_norm"]),
              "dtensors": sum(type(p).__name__ == "DTensor" for p in module.policy.parameters()),
              "ref_dtensors": sum(type(p).__name__ == "DTensor" for p in module.ref_model.parameters()),
              "parameters": len(list(module.policy.parameters()))}
    module.configure_model()  # a second call (validate / test after fit) must leave the shards as they are
    result["dtensors_again"] = sum(type(p).__name__ == "DTensor" for p in module.policy.parameters())
    result["weights"] = full_weights(module, trainer)
    if not mode.startswith("fsdp1"):  # sampling on the sharded weights (FSDP1 only inside its root's forward)
        from lit_reason.modules import GRPO
        from lit_reason.tasks.problem import TextProblem

        problems = [TextProblem("12+3=", "15", lambda c: 0.0)]  # every rank the same prompt and generator
        rollout = GRPO.generate(module, problems, generator=torch.Generator().manual_seed(5))
        result["rollout"] = rollout.completion_ids.tolist()
        # rank 0's rows end at their first token (made its EOS), rank 1's run the whole length:
        # with sharded weights the ranks must still take the same decode steps
        eos = module.engine.eos_ids
        if trainer.global_rank == 0:
            module.engine.eos_ids = sorted({row[0] for row in result["rollout"]})
        early = GRPO.generate(module, problems, generator=torch.Generator().manual_seed(5))
        module.engine.eos_ids = eos
        result["early_ids"], result["early_lengths"] = early.completion_ids.tolist(), early.lengths.tolist()
    if trainer.is_global_zero and export.saved_to:
        from transformers import AutoModelForCausalLM

        exported = AutoModelForCausalLM.from_pretrained(export.saved_to, dtype=torch.float32)
        result["exported"] = {n: p.detach() for n, p in exported.named_parameters()}
    torch.save(result, os.path.join(out, f"rank{trainer.global_rank}.pt"))


def kill_during_second_save(mode: str, out: str, trainer, module, data) -> None:
    """``*_kill``: fit 2 steps, save ``last.ckpt`` (sharded) and copy it to ``OUT_DIR/first.ckpt``,
    move every weight, save ``last.ckpt`` again and kill both ranks (SIGKILL to the process group)
    in the middle of that save: rank 1's shard file half written. ``*_plain`` saves with
    Lightning's own in-place writer instead of the atomic one."""
    import shutil
    import signal

    import lightning.fabric.strategies.fsdp as fabric_fsdp
    import lightning.pytorch.strategies.fsdp as pl_fsdp
    import lightning.pytorch.strategies.model_parallel as pl_model_parallel

    from lit_reason.strategies.atomic_sharded_save import make_sharded_saves_atomic

    trainer.fit(module, data)
    if not mode.endswith("_plain"):
        make_sharded_saves_atomic(trainer.strategy)  # what lit-reason fit installs
    checkpoint = os.path.join(out, "last.ckpt")
    trainer.save_checkpoint(checkpoint)
    if trainer.is_global_zero:
        shutil.copytree(checkpoint, os.path.join(out, "first.ckpt"))
    trainer.strategy.barrier()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    save = fabric_fsdp._distributed_checkpoint_save

    def killed_mid_write(state, path):
        save(state, path)  # every rank's shard written (the call ends with a collective)
        if trainer.global_rank == 1:
            shard = sorted(p for p in os.listdir(path) if p.endswith(".distcp"))[1]
            with open(os.path.join(path, shard), "r+b") as f:
                f.truncate(os.path.getsize(os.path.join(path, shard)) // 2)  # as a kill mid-write leaves it
            os.killpg(os.getpgid(0), signal.SIGKILL)  # both ranks at once, as a node failure
        time.sleep(30)  # rank 0 waits for the kill

    pl_fsdp._distributed_checkpoint_save = pl_model_parallel._distributed_checkpoint_save = killed_mid_write
    trainer.save_checkpoint(checkpoint)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
