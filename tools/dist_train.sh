#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU (or per CPU worker).
#   bash tools/dist_train.sh CONFIG GPUS [train.py options...]     (as MMDetection's)
#   GPUS=8 bash tools/dist_train.sh CONFIG [train.py options...]
# Environment: GPUS (when not given as the second argument), NNODES (1), NODE_RANK (0),
#              PORT (29500), MASTER_ADDR (127.0.0.1), PYTHON (python): the interpreter
#              that runs torchrun.
set -euo pipefail
usage="usage: $0 CONFIG GPUS [train.py options...]  or  GPUS=N $0 CONFIG [train.py options...]"
if [ $# -lt 1 ]; then
    echo "$usage" >&2
    exit 2
fi
CONFIG=$1
shift
if [[ "${1:-}" =~ ^[1-9][0-9]*$ ]]; then
    GPUS=$1
    shift
elif ! [[ "${GPUS:-}" =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: the number of GPUS is missing (or not a positive integer)" >&2
    echo "$usage" >&2
    exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
TOOLS=$(dirname "$0")

PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
