#!/usr/bin/env bash
# Multi-node GPU pretraining under SLURM: one task per node, all GPUs of a node in that
# task. jax.distributed.initialize() reads the SLURM environment by itself (coordinator =
# first node), so each task runs the same launch/pretrain.py command.
#
#   sbatch --nodes=4 --gpus-per-node=8 launch/gpu_slurm.sh --config=configs/bert_base.py \
#       --workdir=/shared/runs/bert_base --config.train_data=/shared/bert_data_128
#
# Checkpoints go to --workdir, which must be on a filesystem every node sees. On preemption
# or time limit SLURM sends SIGTERM (--signal below gives 120 s of warning): the run saves
# a checkpoint at the current step and exits 143; with --requeue it starts again and
# resumes from that checkpoint.
#SBATCH --job-name=bert_jax
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --output=bert_jax-%j.out
set -euo pipefail

# Run from the checkout (sbatch copies this script, so use the submit directory).
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
# NCCL over the fabric; set NCCL_SOCKET_IFNAME / NCCL_IB_HCA for your cluster if needed.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

# --kill-on-bad-exit: one failed task stops the others instead of hanging in a collective.
# exec + srun forwards SIGTERM to the tasks.
exec srun --kill-on-bad-exit=1 --ntasks-per-node=1 python3 launch/pretrain.py "$@"
