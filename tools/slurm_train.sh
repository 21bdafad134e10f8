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
source "$(dirname "$0")/launch_common.sh"
need_arguments 4 "$@"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
run_srun "$PARTITION" "$JOB_NAME" "$TOOLS/train.py" "$CONFIG" --work-dir "$WORK_DIR" \
    --launcher slurm "$@"
