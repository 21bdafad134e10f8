#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU (or per CPU worker).
#   bash tools/dist_train.sh CONFIG GPUS [train.py options...]     (as MMDetection's)
#   GPUS=8 bash tools/dist_train.sh CONFIG [train.py options...]
# Environment: GPUS (when not given as the second argument), NNODES (1), NODE_RANK (0),
#              PORT (29500), MASTER_ADDR (127.0.0.1), PYTHON (python): the interpreter
#              that runs torchrun.
set -euo pipefail
usage="usage: $0 CONFIG GPUS [train.py options...]  or  GPUS=N $0 CONFIG [train.py options...]"
source "$(dirname "$0")/launch_common.sh"
need_arguments 1 "$@"
CONFIG=$1
shift
if [[ "${1:-}" =~ ^[1-9][0-9]*$ ]]; then
    GPUS=$1
    shift
fi
need_gpus
run_torchrun "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
