#!/usr/bin/env bash
# Multi-node GPU pretraining under SLURM: one task (process) per GPU. Inside a SLURM step,
# jax.distributed.initialize() reads the environment by itself (coordinator = first node,
# process count = SLURM_NTASKS, process id = SLURM_PROCID) and restricts each process to
# the GPU numbered SLURM_LOCALID (local_device_ids = [SLURM_LOCALID]), which is JAX's
# one-process-per-GPU model. So every task must see all GPUs of its node (no
# --gpus-per-task, --gpu-bind=none below): the index SLURM_LOCALID is taken among the
# GPUs the task can see. Each task runs the same launch/pretrain.py command.
#
#   sbatch --nodes=4 --gpus-per-node=8 launch/gpu_slurm.sh --config=configs/bert_base.py \
#       --workdir=/shared/runs/bert_base --config.train_data=/shared/bert_data_128
#
# The script starts --gpus-per-node tasks on each node (8 above: 32 processes in all). If
# your SLURM does not export the GPU count to the batch script, give it explicitly:
# `GPUS_PER_NODE=8 sbatch --nodes=4 --gpus-per-node=8 launch/gpu_slurm.sh ...`.
#
# Checkpoints go to --workdir, which must be on a filesystem every node sees. On preemption
# or time limit SLURM sends SIGTERM (--signal below gives 120 s of warning): the run saves
# a checkpoint at the current step and exits 143; with --requeue it starts again and
# resumes from that checkpoint.
#SBATCH --job-name=bert_jax
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --output=bert_jax-%j.out
set -euo pipefail

# Run from the checkout (sbatch copies this script, so use the submit directory).
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

# GPUs per node: explicit GPUS_PER_NODE, else what SLURM exported for --gpus-per-node
# (SLURM_GPUS_ON_NODE, or SLURM_GPUS_PER_NODE which may read "a100:8").
gpus_per_node="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-}}}"
gpus_per_node="${gpus_per_node##*:}"
if ! [[ "${gpus_per_node}" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: cannot tell the GPUs per node (got '${gpus_per_node}'): submit with" \
    "--gpus-per-node=N or set GPUS_PER_NODE=N" >&2
  exit 1
fi
num_nodes="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
# Split the node's CPUs between its tasks (input pipeline threads).
cpus_per_task=$(( ${SLURM_CPUS_ON_NODE:-${gpus_per_node}} / gpus_per_node ))
(( cpus_per_task >= 1 )) || cpus_per_task=1

# Each process holds one GPU; XLA preallocates this fraction of it.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
# NCCL over the fabric; set NCCL_SOCKET_IFNAME / NCCL_IB_HCA for your cluster if needed.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

# --kill-on-bad-exit: one failed task stops the others instead of hanging in a collective.
# --gpu-bind=none: every task sees all the node's GPUs; JAX picks GPU SLURM_LOCALID.
# exec + srun forwards SIGTERM to the tasks.
exec srun --kill-on-bad-exit=1 --nodes="${num_nodes}" \
  --ntasks="$(( num_nodes * gpus_per_node ))" --ntasks-per-node="${gpus_per_node}" \
  --cpus-per-task="${cpus_per_task}" --gpu-bind=none \
  python3 launch/pretrain.py "$@"
