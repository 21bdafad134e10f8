#!/usr/bin/env bash
# Distributed evaluation with torchrun, one process per GPU (or per CPU worker).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options...]     (as MMDetection's)
#   GPUS=8 bash tools/dist_test.sh CONFIG CHECKPOINT [test.py options...]
# Environment: GPUS (when not given as the third argument), NNODES (1), NODE_RANK (0),
#              PORT (29500), MASTER_ADDR (127.0.0.1), PYTHON (python): the interpreter
#              that runs torchrun.
set -euo pipefail
usage="usage: $0 CONFIG CHECKPOINT GPUS [test.py options...]  or  GPUS=N $0 CONFIG CHECKPOINT [test.py options...]"
if [ $# -lt 2 ]; then
    echo "$usage" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
shift 2
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
    "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
