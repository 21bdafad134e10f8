#!/usr/bin/env bash
# Creates .venv and installs the OpenMMLab stack nat_mm runs on.
#
# Idempotent: every step checks whether its result is already there, and a
# stamp records a complete install so that a second run only re-verifies
# (a few seconds). mmcv is built once from source with its compiled ops; pip
# keeps the built wheel in its cache, so a fresh .venv on the same machine
# reinstalls it in seconds.
#
# torch comes from PyPI with its matching torchvision (MMPretrain imports it):
# the default Linux wheels, CUDA builds that also run on CPU-only machines
# (the registry has no CPU-only torchvision). TORCH_VERSION picks another
# release of scripts/torch_versions.txt, e.g. the torch 2.1 that OpenMMLab's
# prebuilt mmcv wheels target.
#
# mmcv is compiled against the installed torch and kept as a wheel under
# $NAT_MM_WHEEL_CACHE/torch<version>-<cpu | cu<CUDA>-sm<archs>>/, so another
# venv with the same torch reuses it. On a machine with an NVIDIA GPU
# (nvidia-smi lists one, or /dev/nvidia0 exists) it is compiled with its CUDA
# ops too (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST, CUDA_HOME; the CUDA toolkit's
# nvcc, same major version as torch's CUDA, must be installed); elsewhere with
# its CPU ops.
#
# Usage: setup_env.sh [--print-plan]
#   --print-plan  print the device, the checks and the commands each step would
#                 run, and install nothing.
#
# Environment: PYTHON (interpreter for the venv, default python3),
#              VENV (default .venv), TORCH_VERSION (default: the first release of
#              scripts/torch_versions.txt), TORCH_INDEX_URL (optional extra index
#              for torch and torchvision, e.g. a CUDA or CPU wheel index),
#              NAT_MM_DEVICE (auto | cpu | cuda, default auto: cuda when a GPU is seen),
#              and on CUDA machines TORCH_CUDA_ARCH_LIST (default: the compute
#              capabilities of the visible GPUs, else DEFAULT_CUDA_ARCHS), CUDA_HOME
#              (default: the toolkit of the nvcc on the PATH, else /usr/local/cuda),
#              MAX_JOBS (parallel compile jobs, default: the number of cores),
#              TORCH_PIP_ISOLATED (default 1: torch and torchvision are installed with
#              `pip --isolated`, so a site pip configuration whose find-links or extra
#              index hold a +cpu torch without its torchvision cannot win; 0 keeps the
#              site configuration, e.g. a mirror),
#              NAT_MM_WHEEL_CACHE (default ~/.cache/nat_mm/wheels),
#              NAT_MM_CUDA_DISK_GB (free disk the CUDA install needs, default 12).
set -euo pipefail

#: Compiled when no GPU can be asked for its compute capability: A100 (8.0) and H100/H200 (9.0).
DEFAULT_CUDA_ARCHS="8.0;9.0"

step_start=0
step() {
    step_start=$(date +%s)
    echo "[setup] $*"
}
done_step() {
    echo "[setup]   done in $(( $(date +%s) - step_start ))s"
}
die() {
    echo "[setup] ERROR: $*" >&2
    exit 1
}

stamp_value() {
    { cat scripts/setup_env.sh scripts/constraints.txt scripts/torch_versions.txt setup.cfg \
        pyproject.toml; echo "$DEVICE $TORCH_VERSION"; } | sha256sum | cut -d' ' -f1
}

torch_release() {  # "TORCHVISION CUDA EXTRA" of torch release $1 in scripts/torch_versions.txt
    awk -v v="$1" '$1 == v { print $2, $3, $4; found = 1 } END { exit !found }' \
        scripts/torch_versions.txt
}

default_torch_version() {
    awk '!/^#/ && NF { print $1; exit }' scripts/torch_versions.txt
}

known_torch_versions() {
    awk '!/^#/ && NF { printf "%s%s", sep, $1; sep = ", " }' scripts/torch_versions.txt
}

detect_device() {  # cpu or cuda (NAT_MM_DEVICE, else cuda when an NVIDIA GPU is visible)
    local gpus=""
    case "${NAT_MM_DEVICE:-auto}" in
        cpu | cuda) echo "$NAT_MM_DEVICE" ;;
        auto)
            # the listing is read whole first: under pipefail, `nvidia-smi -L | grep -q` fails
            # whenever grep exits before nvidia-smi has written its last GPU (SIGPIPE)
            if command -v nvidia-smi >/dev/null 2>&1; then
                gpus=$(nvidia-smi -L 2>/dev/null) || gpus=""
            fi
            if grep -q '^GPU' <<<"$gpus" || [ -e /dev/nvidia0 ]; then
                echo cuda
            else
                echo cpu
            fi ;;
        *) die "NAT_MM_DEVICE must be auto, cpu or cuda, got '$NAT_MM_DEVICE'" ;;
    esac
}

gpu_arch_list() {  # "8.0;9.0": the visible GPUs' compute capabilities, else DEFAULT_CUDA_ARCHS
    local caps=""
    if command -v nvidia-smi >/dev/null 2>&1; then
        caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
            | tr -d ' ' | grep -E '^[0-9]+\.[0-9]+$' | sort -u | paste -sd';' -) || caps=""
    fi
    echo "${caps:-$DEFAULT_CUDA_ARCHS}"
}

find_cuda_home() {  # the CUDA toolkit: CUDA_HOME, else the one of `nvcc` on the PATH, else /usr/local/cuda
    if [ -n "${CUDA_HOME:-}" ]; then
        echo "$CUDA_HOME"
        return
    fi
    local nvcc candidate
    nvcc=$(command -v nvcc || true)
    # `nvcc` on the PATH may be a wrapper script elsewhere (e.g. /usr/local/bin/nvcc), so
    # a candidate counts only if it has both bin/nvcc and include/cuda_runtime.h
    for candidate in ${nvcc:+"$(dirname "$(dirname "$(readlink -f "$nvcc")")")"} /usr/local/cuda; do
        if [ -x "$candidate/bin/nvcc" ] && [ -f "$candidate/include/cuda_runtime.h" ]; then
            echo "$candidate"
            return
        fi
    done
}

nvcc_version() {  # "13.0" from `$1/bin/nvcc --version`
    "$1/bin/nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p'
}

expected_torch_cuda() {  # "12.6" when TORCH_INDEX_URL ends in /cu126, else PyPI's wheel's CUDA
    local tag
    tag=$(printf '%s' "${TORCH_INDEX_URL:-}" | sed -n 's#.*/cu\([0-9][0-9]*\)/*$#\1#p')
    if [ -n "$tag" ]; then echo "${tag%?}.${tag: -1}"; else echo "$TORCH_CUDA"; fi
}

free_gb() {  # free GB on the file system that holds $1 (or its nearest existing parent)
    local path=$1
    while [ ! -e "$path" ]; do path=$(dirname "$path"); done
    df -Pk "$path" | awk 'NR == 2 { print int($4 / 1048576) }'
}

cuda_preflight() {  # the checks a CUDA install must pass before its long steps start
    local expected needed have_gb
    expected=$(expected_torch_cuda)
    CUDA_HOME=$(find_cuda_home)
    [ -n "$CUDA_HOME" ] || die "NAT_MM_DEVICE=cuda needs the CUDA $expected toolkit (nvcc and \
its headers) and none was found (no nvcc on the PATH, no /usr/local/cuda): install the CUDA \
$expected toolkit and put its bin/ on the PATH, or set CUDA_HOME to it"
    [ -x "$CUDA_HOME/bin/nvcc" ] || die "CUDA_HOME=$CUDA_HOME has no bin/nvcc: point CUDA_HOME \
at a CUDA $expected toolkit"
    NVCC_CUDA=$(nvcc_version "$CUDA_HOME")
    [ "${NVCC_CUDA%%.*}" = "${expected%%.*}" ] || die "nvcc $NVCC_CUDA ($CUDA_HOME) and torch's \
CUDA $expected differ in major version; mmcv's CUDA ops need a CUDA ${expected%%.*}.x toolkit: \
install it and set CUDA_HOME, or pick torch's CUDA ${NVCC_CUDA%%.*}.x build with TORCH_INDEX_URL"
    needed=${NAT_MM_CUDA_DISK_GB:-12}
    have_gb=$(free_gb "$VENV")
    [ "$have_gb" -ge "$needed" ] || die "the CUDA install needs ${needed} GB free for $VENV \
(torch's CUDA wheels alone take about 5 GB), only ${have_gb} GB are free there: free space, \
or set VENV to a path on a larger disk"
}

verify() {
    NAT_MM_DEVICE="$DEVICE" NAT_MM_MMCV_WHEEL_DIR="$WHEEL_DIR" "$VENV/bin/python" - <<'PY'
import os
import sys
import torch
import torchvision.ops  # noqa: F401  (fails when torchvision does not match torch's build)
rebuild = (f'delete {os.environ["NAT_MM_MMCV_WHEEL_DIR"]} and run scripts/setup_env.sh again '
           '(it rebuilds mmcv against the installed torch)')
try:
    import mmcv
    import mmcv.ops  # noqa: F401  (fails when mmcv was built without ops)
    from mmcv.ops import batched_nms  # noqa: F401
except Exception as exc:  # noqa: BLE001
    sys.exit(f'mmcv has no compiled ops, or they do not load with this torch ({exc!r}): {rebuild}')
import mmengine
import mmdet.models  # noqa: F401
import mmpretrain.models  # noqa: F401
import mmseg.models  # noqa: F401
import nat_mm  # noqa: F401
ops = 'with ops'
if os.environ['NAT_MM_DEVICE'] == 'cuda':
    from mmcv.ops import get_compiling_cuda_version
    if not torch.version.cuda:
        sys.exit(f'torch {torch.__version__} is a CPU build on a CUDA machine; see '
                 'docs/gpu.md "Installing on a GPU machine" (TORCH_INDEX_URL)')
    if get_compiling_cuda_version() == 'not available':
        sys.exit(f'mmcv was built without its CUDA ops: {rebuild}')
    ops = f'with CUDA {get_compiling_cuda_version()} ops'
    if torch.cuda.is_available():
        boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]], device='cuda')
        batched_nms(boxes, torch.tensor([0.9, 0.8], device='cuda'),
                    torch.zeros(2, dtype=torch.long, device='cuda'), dict(iou_threshold=0.5))
        ops += ', nms ran on the GPU'
cuda = f'CUDA {torch.version.cuda}' if torch.cuda.is_available() else 'CPU'
print(f'[setup] stack OK: torch {torch.__version__} ({cuda}), mmcv {mmcv.__version__} ({ops}), '
      f'mmengine {mmengine.__version__}, mmdet {__import__("mmdet").__version__}, '
      f'mmseg {__import__("mmseg").__version__}, mmpretrain {__import__("mmpretrain").__version__}, '
      f'torchvision {__import__("torchvision").__version__}')
PY
}

# Sourced (e.g. by a test of the functions above): define them only.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    return 0
fi

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.nat_mm_setup_stamp"
PLAN=0
case "${1:-}" in
    --print-plan) PLAN=1 ;;
    "") ;;
    *) die "unknown argument '$1' (usage: setup_env.sh [--print-plan])" ;;
esac
TORCH_VERSION=${TORCH_VERSION:-$(default_torch_version)}
read -r TORCHVISION_VERSION TORCH_CUDA TORCH_EXTRA < <(torch_release "$TORCH_VERSION") \
    || die "TORCH_VERSION=$TORCH_VERSION is not one of the releases set up and tested here \
($(known_torch_versions); scripts/torch_versions.txt)"
# The project's pins plus this torch release's: pip can move none of them.
CONSTRAINTS=$(mktemp "${TMPDIR:-/tmp}/nat_mm_constraints.XXXXXX")
trap 'rm -f "$CONSTRAINTS"' EXIT
{ cat scripts/constraints.txt
  echo "torch==$TORCH_VERSION"
  echo "torchvision==$TORCHVISION_VERSION"
  [ "$TORCH_EXTRA" = - ] || echo "$TORCH_EXTRA"; } > "$CONSTRAINTS"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_CONSTRAINT="$CONSTRAINTS"
DEVICE=$(detect_device)
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet)
JOBS=${MAX_JOBS:-$(nproc)}

# torch and torchvision: PyPI's wheels with the site's pip configuration ignored (its
# find-links may hold a +cpu torch that pip would prefer, and no torchvision loads next to it)
TORCH_PIP=("${PIP[@]}")
if [ "${TORCH_PIP_ISOLATED:-1}" = 1 ]; then
    TORCH_PIP=("$PY" -m pip --isolated install --quiet --disable-pip-version-check
               -c "$CONSTRAINTS")
fi
[ -z "${TORCH_INDEX_URL:-}" ] || TORCH_PIP+=(--extra-index-url "$TORCH_INDEX_URL")
TORCH_PIP+=("torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION")
[ "$TORCH_EXTRA" = - ] || TORCH_PIP+=("$TORCH_EXTRA")
TOOLS_PIP=("${PIP[@]}" "setuptools>=77,<82" wheel ninja psutil)
STACK_PIP=("${PIP[@]}" mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0
           ftfy regex pycocotools)
NAT_MM_PIP=("${PIP[@]}" --no-build-isolation -e ".[tests]")

# mmcv is compiled against the installed torch (--no-build-isolation: in an isolated build env
# there is no torch and mmcv silently comes out without its ops) into a wheel kept per torch
WHEEL_ROOT="${NAT_MM_WHEEL_CACHE:-$HOME/.cache/nat_mm/wheels}"
MMCV_BUILD=("$PY" -m pip wheel --quiet --no-build-isolation --no-deps --no-cache-dir
            -w WHEEL_DIR mmcv==2.1.0)
if [ "$DEVICE" = cuda ]; then
    cuda_preflight
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(gpu_arch_list)}
    WHEEL_DIR="$WHEEL_ROOT/torch$TORCH_VERSION-cu$(expected_torch_cuda)-sm${TORCH_CUDA_ARCH_LIST//;/_}"
    MMCV_ENV=(CUDA_HOME="$CUDA_HOME" FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST"
              MAX_JOBS="$JOBS")
    mmcv_build="compiled CPU and CUDA ops for sm $TORCH_CUDA_ARCH_LIST with nvcc $NVCC_CUDA \
($CUDA_HOME); first build about 30 min per arch on 2 cores, then kept in $WHEEL_DIR"
else
    WHEEL_DIR="$WHEEL_ROOT/torch$TORCH_VERSION-cpu"
    MMCV_ENV=(MAX_JOBS="$JOBS")
    mmcv_build="compiled CPU ops (first build ~12-25 min on 2 cores, then kept in $WHEEL_DIR)"
fi
MMCV_BUILD[${#MMCV_BUILD[@]} - 2]=$WHEEL_DIR

if [ "$PLAN" = 1 ]; then
    show() { printf '[plan]     %s\n' "$*"; }
    echo "[plan] device: $DEVICE (NAT_MM_DEVICE=${NAT_MM_DEVICE:-auto}); venv: $VENV; nothing is installed"
    [ "$DEVICE" = cpu ] || echo "[plan] checks passed: nvcc $NVCC_CUDA in CUDA_HOME=$CUDA_HOME" \
        "matches torch's CUDA $(expected_torch_cuda); $(free_gb "$VENV") GB free for $VENV"
    echo "[plan] 1/6 virtual environment"
    show "$PYTHON" -m venv "$VENV"
    echo "[plan] 2/6 torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION ($DEVICE) and build tools"
    show "constraints: $(grep -v '^#' "$CONSTRAINTS" | paste -sd' ' -)"
    show "${TORCH_PIP[@]}"
    show "${TOOLS_PIP[@]}"
    echo "[plan] 3/6 mmcv 2.1.0 with $mmcv_build"
    if [ "$DEVICE" = cuda ]; then
        show "${MMCV_ENV[@]}" "CPATH=<$VENV's site-packages/nvidia/*/include>" "${MMCV_BUILD[@]}"
    else
        show "${MMCV_ENV[@]}" "${MMCV_BUILD[@]}"
    fi
    show "${PIP[@]}" --no-deps "$WHEEL_DIR/mmcv-2.1.0-*.whl"
    echo "[plan] 4/6 mmengine, mmdet, mmsegmentation, mmpretrain, pycocotools"
    show "${STACK_PIP[@]}"
    echo "[plan] 5/6 nat_mm (editable, with test extras)"
    show "${NAT_MM_PIP[@]}"
    echo "[plan] 6/6 verify the stack (torch, mmcv's compiled ops$([ "$DEVICE" = cpu ] \
        || echo ", CUDA $(expected_torch_cuda) in torch and mmcv"), mmdet, mmseg, nat_mm import)"
    exit 0
fi

total_start=$(date +%s)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_value)" ]; then
    step "environment $VENV already set up; verifying"
    if verify; then
        done_step
        exit 0
    fi
    echo "[setup] verification failed; repairing the environment"
    rm -f "$STAMP"
fi

step "1/6 virtual environment $VENV"
if [ ! -x "$PY" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
    || die "Python >= 3.9 is required (got $("$PY" --version))"
done_step

have() {  # have PACKAGE VERSION: is exactly that version installed?
    "$PY" - "$1" "$2" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version(sys.argv[1]).split('+')[0] == sys.argv[2] else 1)
PY
}

torch_ok() {  # the torch release and its torchvision are installed and load together, and on a
              # CUDA machine torch is a CUDA build
    have torch "$TORCH_VERSION" && have torchvision "$TORCHVISION_VERSION" || return 1
    "$PY" -c 'import sys, torch, torchvision.ops
sys.exit(0 if torch.version.cuda or sys.argv[1] == "cpu" else 1)' "$DEVICE" 2>/dev/null
}

mmcv_ok() {  # mmcv 2.1.0 with its compiled ops, and on a CUDA machine with its CUDA ops
    have mmcv 2.1.0 || return 1
    if [ "$DEVICE" = cpu ]; then
        "$PY" -c 'import mmcv.ops' 2>/dev/null
    else
        "$PY" -c 'import sys; from mmcv.ops import get_compiling_cuda_version as v
sys.exit(v() == "not available")' 2>/dev/null
    fi
}

nvidia_wheel_includes() {  # include dirs of the nvidia-* wheels torch's CUDA build depends on
    "$PY" -c 'import glob, os, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
print(":".join(sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))))'
}

step "2/6 torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION ($DEVICE) and build tools"
if ! torch_ok; then
    # a torch of the same version that pip would keep: a +cpu build, or a CPU build on a GPU machine
    "$PY" -m pip uninstall --quiet -y torch torchvision 2>/dev/null || true
    "${TORCH_PIP[@]}"
    torch_ok || die "torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION do not load together \
(or torch came without CUDA on a CUDA machine: an index or wheel folder holding a +cpu build won). \
Leave TORCH_PIP_ISOLATED at 1, point TORCH_INDEX_URL at an index holding both, or set \
NAT_MM_DEVICE=cpu; see docs/environments.md"
fi
"${TOOLS_PIP[@]}"
done_step

if [ "$DEVICE" = cuda ]; then
    torch_cuda=$("$PY" -c 'import torch; print(torch.version.cuda)')
    [ "${torch_cuda%%.*}" = "${NVCC_CUDA%%.*}" ] || die "torch came with CUDA $torch_cuda, nvcc \
is $NVCC_CUDA ($CUDA_HOME): install a CUDA ${torch_cuda%%.*}.x toolkit and set CUDA_HOME"
    CPATH=$(nvidia_wheel_includes)${CPATH:+:$CPATH}
    export CPATH
fi

step "3/6 mmcv 2.1.0 with $mmcv_build"
if ! mmcv_ok; then
    if ! ls "$WHEEL_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
        env "${MMCV_ENV[@]}" "${MMCV_BUILD[@]}"
    fi
    "${PIP[@]}" --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-2.1.0-*.whl
    "${PIP[@]}" mmcv==2.1.0   # its pure-Python dependencies (numpy, mmengine, ...)
    mmcv_ok || die "the mmcv wheel in $WHEEL_DIR has no $([ "$DEVICE" = cpu ] || echo 'CUDA ')ops \
or does not load with torch $TORCH_VERSION; delete it and run again"
fi
done_step

step "4/6 mmengine, mmdet, mmsegmentation, mmpretrain, pycocotools"
"${STACK_PIP[@]}"
done_step

step "5/6 nat_mm (editable, with test extras)"
"${NAT_MM_PIP[@]}"
done_step

step "6/6 verify the stack"
verify || die "the installed stack does not import; see the message above"
stamp_value > "$STAMP"
done_step
echo "[setup] total $(( $(date +%s) - total_start ))s"
