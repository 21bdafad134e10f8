#!/usr/bin/env bash
# Evaluation on a Slurm cluster: srun starts one task per GPU, and test.py's
# --launcher slurm makes each task a rank of one distributed run.
#   bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options...]
#   GPUS=8 bash tools/slurm_test.sh dev nat_t configs/upernet_nat_tiny_ade20k.py iter_160000.pth
# Environment: GPUS (8: tasks in all), GPUS_PER_NODE (8, or GPUS when fewer),
#              CPUS_PER_TASK (5), PORT (29500: the rendezvous port), SRUN_ARGS (more srun
#              options, word-split), PYTHON (python): the interpreter each task runs.
set -euo pipefail
usage="usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options...]"
source "$(dirname "$0")/launch_common.sh"
need_arguments 4 "$@"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
run_srun "$PARTITION" "$JOB_NAME" "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher slurm "$@"
