#!/usr/bin/env bash
# Training on a Slurm cluster: srun starts one task per GPU, and train.py's
# --launcher slurm makes each task a rank of one distributed run (rank, world size and the
# first node's address from Slurm's variables).
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]
#   GPUS=16 bash tools/slurm_train.sh dev nat_t configs/upernet_nat_tiny_ade20k.py work_dirs/nat_t
# Environment: GPUS (8: tasks in all), GPUS_PER_NODE (8, or GPUS when fewer),
#              CPUS_PER_TASK (5), PORT (29500: the rendezvous port), SRUN_ARGS (more srun
#              options, word-split), PYTHON (python): the interpreter each task runs.
set -euo pipefail
usage="usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]"
if [ $# -lt 4 ]; then
    echo "$usage" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
positive_integer() {  # NAME: exits unless $NAME is a positive integer
    if ! [[ "${!1}" =~ ^[1-9][0-9]*$ ]]; then
        echo "$0: $1 must be a positive integer, got '${!1}'" >&2
        exit 2
    fi
}
GPUS=${GPUS:-8}
positive_integer GPUS
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
positive_integer GPUS_PER_NODE
positive_integer CPUS_PER_TASK
TOOLS=$(dirname "$0")

# SRUN_ARGS is split into words on purpose: it holds several srun options
# shellcheck disable=SC2086
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" MASTER_PORT="${PORT:-29500}" \
exec srun --partition="$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres="gpu:$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$TOOLS/train.py" "$CONFIG" --work-dir "$WORK_DIR" \
    --launcher slurm "$@"
