# Sourced (not run) by tools/dist_{train,test}.sh and tools/slurm_{train,test}.sh: what the
# four launchers share. The caller sets `usage` first; messages name the caller ($0).
#   need_arguments COUNT "$@"   exit 2 with the usage unless at least COUNT arguments
#   positive_integer NAME       exit 2 unless $NAME is a positive integer
#   need_gpus                   exit 2 with the usage unless GPUS is a positive integer
#   run_torchrun COMMAND...     torchrun, GPUS processes per node (NNODES, NODE_RANK, PORT,
#                               MASTER_ADDR), each running `python COMMAND...`
#   run_srun PARTITION JOB_NAME COMMAND...
#                               srun, GPUS tasks (GPUS_PER_NODE a node, CPUS_PER_TASK,
#                               SRUN_ARGS, PORT), each running `python -u COMMAND...`
TOOLS=$(dirname "$0")

need_arguments() {
    if [ $(($# - 1)) -lt "$1" ]; then
        echo "$usage" >&2
        exit 2
    fi
}

positive_integer() {
    if ! [[ "${!1:-}" =~ ^[1-9][0-9]*$ ]]; then
        echo "$0: $1 must be a positive integer, got '${!1:-}'" >&2
        exit 2
    fi
}

need_gpus() {
    if ! [[ "${GPUS:-}" =~ ^[1-9][0-9]*$ ]]; then
        echo "$0: the number of GPUS is missing (or not a positive integer)" >&2
        echo "$usage" >&2
        exit 2
    fi
}

run_torchrun() {
    PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
    exec "${PYTHON:-python}" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$GPUS" \
        --master_port="${PORT:-29500}" \
        "$@"
}

run_srun() {
    local partition=$1 job_name=$2
    shift 2
    GPUS=${GPUS:-8}
    positive_integer GPUS
    GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
    CPUS_PER_TASK=${CPUS_PER_TASK:-5}
    positive_integer GPUS_PER_NODE
    positive_integer CPUS_PER_TASK
    # SRUN_ARGS is split into words on purpose: it holds several srun options
    # shellcheck disable=SC2086
    PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" MASTER_PORT="${PORT:-29500}" \
    exec srun --partition="$partition" \
        --job-name="$job_name" \
        --gres="gpu:$GPUS_PER_NODE" \
        --ntasks="$GPUS" \
        --ntasks-per-node="$GPUS_PER_NODE" \
        --cpus-per-task="$CPUS_PER_TASK" \
        --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} \
        "${PYTHON:-python}" -u "$@"
}
