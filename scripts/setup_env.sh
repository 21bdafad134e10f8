#!/usr/bin/env bash
# Creates .venv and installs the OpenMMLab stack nat_mm runs on.
#
# Idempotent: every step checks whether its result is already there, and a
# stamp records a complete install so that a second run only re-verifies
# (a few seconds). mmcv is built once from source with its compiled ops; pip
# keeps the built wheel in its cache, so a fresh .venv on the same machine
# reinstalls it in seconds.
#
# Environment: PYTHON (interpreter for the venv, default python3),
#              VENV (default .venv), TORCH_INDEX_URL (optional extra index
#              for torch, e.g. a CUDA wheel index).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CONSTRAINTS="$ROOT/scripts/constraints.txt"
STAMP="$VENV/.nat_mm_setup_stamp"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_CONSTRAINT="$CONSTRAINTS"

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
    cat scripts/setup_env.sh scripts/constraints.txt setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1
}

verify() {
    "$VENV/bin/python" - <<'PY'
import sys
import torch
try:
    import mmcv
    import mmcv.ops  # noqa: F401  (fails when mmcv was built without ops)
    from mmcv.ops import batched_nms  # noqa: F401
except Exception as exc:  # noqa: BLE001
    sys.exit(f'mmcv has no compiled ops ({exc!r}); rebuild it with '
             '`pip install --no-build-isolation --no-cache-dir --force-reinstall mmcv==2.1.0`')
import mmengine
import mmdet.models  # noqa: F401
import mmseg.models  # noqa: F401
import nat_mm  # noqa: F401
cuda = f'CUDA {torch.version.cuda}' if torch.cuda.is_available() else 'CPU'
print(f'[setup] stack OK: torch {torch.__version__} ({cuda}), mmcv {mmcv.__version__} (with ops), '
      f'mmengine {mmengine.__version__}, mmdet {__import__("mmdet").__version__}, '
      f'mmseg {__import__("mmseg").__version__}')
PY
}

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
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet)
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

step "2/6 torch 2.13.0 and build tools"
if ! have torch 2.13.0; then
    extra=()
    if [ -n "${TORCH_INDEX_URL:-}" ]; then extra=(--extra-index-url "$TORCH_INDEX_URL"); fi
    "${PIP[@]}" "${extra[@]}" torch==2.13.0
fi
"${PIP[@]}" "setuptools>=77,<82" wheel ninja psutil
done_step

step "3/6 mmcv 2.1.0 with compiled ops (first build ~12 min on 2 cores, then cached)"
if ! have mmcv 2.1.0 || ! "$PY" -c 'import mmcv.ops' 2>/dev/null; then
    # Without --no-build-isolation the build env has no torch and mmcv
    # silently comes out without its ops.
    MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" --no-build-isolation mmcv==2.1.0
    "$PY" -c 'import mmcv.ops' 2>/dev/null || {
        echo "[setup] mmcv came from a cached wheel without ops; rebuilding" >&2
        MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" --no-build-isolation --no-cache-dir \
            --force-reinstall --no-deps mmcv==2.1.0
    }
fi
done_step

step "4/6 mmengine, mmdet, mmsegmentation, pycocotools"
"${PIP[@]}" mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex pycocotools
done_step

step "5/6 nat_mm (editable, with test extras)"
"${PIP[@]}" --no-build-isolation -e ".[tests]"
done_step

step "6/6 verify the stack"
verify || die "the installed stack does not import; see the message above"
stamp_value > "$STAMP"
done_step
echo "[setup] total $(( $(date +%s) - total_start ))s"
