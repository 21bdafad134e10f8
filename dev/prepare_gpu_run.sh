#!/usr/bin/env bash
# Prepares a run of dev/gpu_check.py on the benchmark GPU machine, which has Python 3.12,
# torch (CUDA), Triton, timm, numpy and pytest but no mmengine and no network.
#
# Fills the git-ignored .whl/ with mmengine 0.10.7 and the pure-Python packages it imports
# that the GPU machine lacks (or may lack), as wheels for Python 3.12 / manylinux x86_64
# (about 3.3 MB in all), checks that they fit what a device run carries (64 MiB with the
# work tree), and prints the one command to run there (repo root, $OUT the output folder,
# carrying .whl). Not shipped: OpenCV (54 MB; `import nat_mm` does not import it, only
# mmengine.runner and mmcv do) and matplotlib (imported lazily).
#
# Environment: PYTHON (the pip to download with, default python3),
#              WHL_PYTHON_VERSION (default 3.12), WHL_PLATFORM (default manylinux2014_x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHL=.whl
PY_VERSION=${WHL_PYTHON_VERSION:-3.12}
PLATFORM=${WHL_PLATFORM:-manylinux2014_x86_64}
# mmengine 0.10.7 and what `import nat_mm` (mmengine.config/.logging/.model/.runner) needs of
# its requirements, versions tried together here: yapf needs platformdirs; rich needs
# markdown-it-py (mdurl) and pygments; pyyaml is compiled (the one wheel per Python version).
PACKAGES=(mmengine==0.10.7 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9 termcolor==3.3.0
          rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0 pyyaml==6.0.3
          packaging==26.4)
LIMIT_BYTES=$(( 64 * 1024 * 1024 ))

rm -rf "$WHL"
mkdir -p "$WHL"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --platform "$PLATFORM" -d "$WHL" "${PACKAGES[@]}"

wheels=$(du -cb "$WHL"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "[prepare] $(ls "$WHL" | wc -l) wheels in $WHL: $(( wheels / 1024 )) KiB; tracked work tree" \
    "$(( tree / 1024 )) KiB; limit $(( LIMIT_BYTES / 1024 )) KiB"
if [ $(( wheels + tree )) -gt "$LIMIT_BYTES" ]; then
    echo "[prepare] ERROR: wheels + work tree exceed what a device run carries" >&2
    exit 1
fi
cat <<'EOF'
[prepare] on the GPU machine (repo root, carry .whl, timeout 570 s), the one command:
PYTHONUNBUFFERED=1 python -m pip install -q --no-index --no-deps --target .pydeps .whl/*.whl && PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.pydeps:$PWD python dev/gpu_check.py --out $OUT
EOF
