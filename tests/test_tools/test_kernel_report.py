"""tools/analysis_tools/kernel_report.py: the Triton kernels compiled offline for
NVIDIA GPUs (no GPU needed). The tool runs in a subprocess: the test session
runs Triton's interpreter (TRITON_INTERPRET=1), under which nothing compiles."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from environment import require_backend, require_module

# this Triton runs the kernels here (a CPU: through its interpreter) and compiles for NVIDIA
require_backend('triton', 'cuda' if torch.cuda.is_available() else 'cpu')
triton = require_module('triton')
require_module('triton.backends.nvidia.compiler')

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'analysis_tools' / 'kernel_report.py'


@pytest.fixture(scope='module')
def kernel_report(load_tool):
    return load_tool('analysis_tools/kernel_report')


def _run_tool(*args):
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    return subprocess.run([sys.executable, str(TOOL), *args], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_nat_case_fits_and_bad_arch_is_one_line(kernel_report, tmp_path):
    """bf16, K7, head_dim 32, rpb (the NAT models) for sm_80 and sm_90: every
    kernel compiles, fits the arch's shared memory and spills nothing; an
    unknown arch is one line and the other rows are still reported."""
    out = tmp_path / 'nat.json'
    done = _run_tool('--arch', '80', '75', '90', '--dtype', 'bf16', '--kernel-size', '7',
                     '--head-dim', '32', '--rpb', 'yes', '--dropout', 'no', '--json', str(out))
    assert done.returncode == 0, done.stderr
    assert 'kernel_report: unknown arch 75: known are 80 86 89 90' in done.stderr.splitlines()
    records = json.loads(out.read_text())
    assert [tuple(r) for r in records] == [kernel_report.KEYS] * 6
    assert {(r['kernel'], r['arch']) for r in records} == {
        (kernel, arch) for kernel in ('fwd', 'dq', 'dkv') for arch in (80, 90)}
    for r in records:
        assert kernel_report.shared_fits(r), r
        assert r['spill_bytes'] == 0, r
        assert r['blocks_per_sm'] >= 2, r
        if triton.__version__.startswith('3.9.'):   # the targets are set on Triton 3.9
            assert r['registers'] <= (128 if r['kernel'] == 'fwd' else 160), r
    assert '| fwd | sm_80 | bf16 | 7 | 32 | yes | no |' in done.stdout


@pytest.mark.slow
def test_fp32_with_dropout_compiles(kernel_report, tmp_path):
    """float32 (IEEE dots outside the tensor cores) with attention dropout,
    K13, head_dim 64: compiles and fits; spills are reported, not forbidden."""
    out = tmp_path / 'fp32.json'
    done = _run_tool('--arch', '90', '--dtype', 'fp32', '--kernel-size', '13', '--head-dim',
                     '64', '--rpb', 'yes', '--dropout', 'yes', '--json', str(out), '--summary')
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())
    assert [r['kernel'] for r in records] == ['fwd', 'dq', 'dkv']
    dkv = records[2]
    assert (f"| dkv | sm_90 | fp32 | 64 | yes | 13 | yes | {dkv['num_warps']} "
            f"| {dkv['registers']} | {dkv['spill_bytes']} |") in done.stdout
    for r in records:
        assert (r['dtype'], r['dropout'], r['arch']) == ('fp32', True, 90)
        assert kernel_report.shared_fits(r) and r['registers'] <= 255, r


@pytest.mark.slow
def test_a_version_that_cannot_install_is_one_line(tmp_path):
    done = _run_tool('--triton-versions', '0.0.1', '--venv-root', str(tmp_path), '--arch',
                     '80', '--dtype', 'bf16', '--kernel-size', '3', '--head-dim', '16')
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if 'triton 0.0.1' in line]
    assert len(lines) == 1 and 'cannot install' in lines[0], done.stderr


@pytest.mark.parametrize('arch,registers,shared,warps,blocks', [
    (80, 128, 12288, 4, 4),    # 4096 registers per warp: 4 warps per scheduler
    (80, 160, 12288, 4, 3),
    (80, 255, 12288, 4, 2),    # rounded up to 8192 per warp
    (90, 64, 12288, 4, 8),
    (90, 32, 0, 4, 16),        # 64 warps per SM
    (80, 32, 0, 1, 32),        # 32 blocks per SM
    (86, 64, 60000, 4, 1),     # shared memory: 99 KB usable per SM
    (89, 96, 12288, 8, 2),
])
def test_blocks_per_sm(kernel_report, arch, registers, shared, warps, blocks):
    assert kernel_report.blocks_per_sm(arch, registers, shared, warps) == blocks
