#!/usr/bin/env bash
# Distributed evaluation with torchrun, one process per GPU (or per CPU worker).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options...]     (as MMDetection's)
#   GPUS=8 bash tools/dist_test.sh CONFIG CHECKPOINT [test.py options...]
# Environment: GPUS (when not given as the third argument), NNODES (1), NODE_RANK (0),
#              PORT (29500), MASTER_ADDR (127.0.0.1), PYTHON (python): the interpreter
#              that runs torchrun.
set -euo pipefail
usage="usage: $0 CONFIG CHECKPOINT GPUS [test.py options...]  or  GPUS=N $0 CONFIG CHECKPOINT [test.py options...]"
source "$(dirname "$0")/launch_common.sh"
need_arguments 2 "$@"
CONFIG=$1
CHECKPOINT=$2
shift 2
if [[ "${1:-}" =~ ^[1-9][0-9]*$ ]]; then
    GPUS=$1
    shift
fi
need_gpus
run_torchrun "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
