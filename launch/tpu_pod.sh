#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM slice: create it (or reuse it), install bert_jax on every
# worker, then run launch/pretrain.py on all workers at once. jax.distributed.initialize()
# finds the slice by itself, so every worker runs the very same command.
#
#   launch/tpu_pod.sh NAME ZONE ACCELERATOR [RUNTIME] -- --config=configs/tpu_pod.py \
#       --workdir=gs://BUCKET/run --config.train_data=gs://BUCKET/data
#
#   e.g. launch/tpu_pod.sh bert-v4 us-central2-b v4-32 -- --config=configs/tpu_pod.py ...
#
# Environment: PROJECT (gcloud project, default: the configured one), SPOT=1 for a spot
# slice, REPO (git URL to install from; default: copy this checkout with scp),
# JAX_SPEC (default "jax[tpu]"). A preempted spot slice: run the script again with the
# same --workdir; training resumes from the newest checkpoint (SIGTERM saves one).
set -euo pipefail

usage() { sed -n '2,16p' "$0"; exit 2; }
[[ $# -ge 4 ]] || usage
NAME=$1; ZONE=$2; ACCEL=$3; shift 3
RUNTIME=tpu-ubuntu2204-base
if [[ $1 != "--" ]]; then RUNTIME=$1; shift; fi
[[ ${1:-} == "--" ]] || usage
shift
TRAIN_ARGS=("$@")
PROJECT_FLAG=()
[[ -n ${PROJECT:-} ]] && PROJECT_FLAG=(--project="$PROJECT")
JAX_SPEC=${JAX_SPEC:-"jax[tpu]"}
HERE=$(cd "$(dirname "$0")/.." && pwd)

tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" "${PROJECT_FLAG[@]}"; }

if tpu describe "$NAME" >/dev/null 2>&1; then
  echo "reusing TPU VM $NAME ($ZONE)"
else
  echo "creating TPU VM $NAME: $ACCEL, $RUNTIME ($ZONE)"
  extra=()
  [[ ${SPOT:-0} == 1 ]] && extra=(--spot)
  tpu create "$NAME" --accelerator-type="$ACCEL" --version="$RUNTIME" "${extra[@]}"
fi

# Install the code on every worker: from git, or this checkout (tracked files only).
if [[ -n ${REPO:-} ]]; then
  fetch="rm -rf ~/bert_jax && git clone --depth 1 $REPO ~/bert_jax"
else
  tarball=$(mktemp /tmp/bert_jax.XXXXXX.tar.gz)
  git -C "$HERE" archive --format=tar.gz -o "$tarball" HEAD
  tpu scp "$tarball" "$NAME:~/bert_jax.tar.gz" --worker=all
  rm -f "$tarball"
  fetch="rm -rf ~/bert_jax && mkdir ~/bert_jax && tar -xzf ~/bert_jax.tar.gz -C ~/bert_jax"
fi
tpu ssh "$NAME" --worker=all --command="set -e; $fetch; cd ~/bert_jax; \
  python3 -m pip install -q -U pip; python3 -m pip install -q '$JAX_SPEC' -e ."

# Run on all workers; quote every argument for the remote shell.
quoted=$(printf ' %q' "${TRAIN_ARGS[@]}")
tpu ssh "$NAME" --worker=all \
  --command="cd ~/bert_jax && python3 launch/pretrain.py --distributed$quoted"
