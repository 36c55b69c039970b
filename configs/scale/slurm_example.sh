#!/bin/bash
# SLURM launch of configs/scale/ddp_multinode.yaml: 2 nodes x 8 GPUs, one task per GPU.
# Lightning reads SLURM's variables (SLURM_NTASKS, SLURM_PROCID, ...) and sets up the process
# group itself: use `srun`, not torchrun. --nodes / --ntasks-per-node must equal
# trainer.num_nodes / trainer.devices. One directory per run ($RUN_DIR): a requeued or resubmitted
# job resumes from the newest checkpoint in it: ModelCheckpoint's last.ckpt (every 100 steps, and on
# SIGUSR1 before the time limit, which also requeues the job, or SIGTERM: exit code 143,
# docs/fault_tolerance.md) or an hpc_ckpt_N.ckpt that Lightning's own SLURM handling wrote.
#SBATCH --job-name=lit-reason-grpo
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90          # saves last.ckpt after the current step and requeues the job
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out

set -euo pipefail
CONFIG=${CONFIG:-configs/scale/ddp_multinode.yaml}   # its last callback is its ModelCheckpoint
RUN_DIR=${RUN_DIR:-runs/$SLURM_JOB_NAME}
NEWEST=$(ls -t "$RUN_DIR"/hpc_ckpt_*.ckpt "$RUN_DIR/checkpoints/last.ckpt" 2>/dev/null | head -n 1 || true)
RESUME=()
if [ -n "$NEWEST" ]; then RESUME=(--ckpt_path "$NEWEST"); fi

srun lit-reason fit --config "$CONFIG" \
    --trainer.num_nodes "$SLURM_NNODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" \
    --trainer.default_root_dir "$RUN_DIR" \
    --trainer.callbacks.dirpath "$RUN_DIR/checkpoints" \
    "${RESUME[@]}"
