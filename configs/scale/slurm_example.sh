#!/bin/bash
# SLURM launch of configs/scale/ddp_multinode.yaml: 2 nodes x 8 GPUs, one task per GPU.
# Lightning reads SLURM's variables (SLURM_NTASKS, SLURM_PROCID, ...) and sets up the process
# group itself: use `srun`, not torchrun. --nodes / --ntasks-per-node must equal
# trainer.num_nodes / trainer.devices. Resubmitting resumes from the last checkpoint.
#SBATCH --job-name=lit-reason-grpo
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90          # Lightning saves a checkpoint and requeues on this signal
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out

set -euo pipefail
CONFIG=${CONFIG:-configs/scale/ddp_multinode.yaml}
RUN_DIR=${RUN_DIR:-runs/$SLURM_JOB_NAME}
LAST="$RUN_DIR/checkpoints/last.ckpt"
RESUME=()
if [ -f "$LAST" ]; then RESUME=(--ckpt_path "$LAST"); fi

srun lit-reason fit --config "$CONFIG" \
    --trainer.num_nodes "$SLURM_NNODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" \
    --trainer.default_root_dir "$RUN_DIR" \
    --trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint \
    --trainer.callbacks.dirpath "$RUN_DIR/checkpoints" --trainer.callbacks.every_n_train_steps 100 \
    --trainer.callbacks.save_last true \
    "${RESUME[@]}"
