"""scripts/setup_env.sh: its plan for each device (``--print-plan``, nothing installed) and the
checks a CUDA install passes before its long steps."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _executable(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def _toolkit(root, release):
    """A stand-in CUDA toolkit: bin/nvcc that reports ``release`` and include/cuda_runtime.h."""
    _executable(root / 'bin' / 'nvcc',
                f'#!/bin/sh\necho "Cuda compilation tools, release {release}, V{release}.1"\n')
    (root / 'include').mkdir()
    (root / 'include' / 'cuda_runtime.h').write_text('')
    return root


def _plan(tmp_path, **env):
    """Runs ``setup_env.sh --print-plan`` with a venv path under ``tmp_path``; returns the
    completed process after checking that nothing was created."""
    venv = tmp_path / 'venv'
    full_env = {k: v for k, v in os.environ.items()
                if k not in ('NAT_MM_DEVICE', 'CUDA_HOME', 'TORCH_CUDA_ARCH_LIST', 'TORCH_VERSION',
                             'TORCH_INDEX_URL', 'MAX_JOBS', 'TORCH_PIP_ISOLATED')}
    full_env.update(VENV=str(venv), MAX_JOBS='3', **env)
    result = subprocess.run(['bash', 'scripts/setup_env.sh', '--print-plan'], cwd=ROOT,
                            env=full_env, capture_output=True, text=True, timeout=60)
    assert not venv.exists()
    return result


def _constraints(lines):
    """The pins of the plan's constraints line."""
    line = next(line for line in lines if line.split()[1] == 'constraints:')
    return line.split()[2:]


def test_cpu_plan_installs_pypi_torch_and_torchvision_and_builds_mmcv_per_torch(tmp_path):
    result = _plan(tmp_path, NAT_MM_DEVICE='cpu', NAT_MM_WHEEL_CACHE=str(tmp_path / 'wheels'))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('[plan] device: cpu (NAT_MM_DEVICE=cpu)')
    # PyPI's pair (the site configuration's +cpu torch has no torchvision that loads with it)
    torch_line = next(line for line in lines if 'torch==2.13.0' in line and '-m pip' in line)
    assert '-m pip --isolated install' in torch_line
    assert torch_line.split()[-2:] == ['torch==2.13.0', 'torchvision==0.28.0']
    assert {'torch==2.13.0', 'torchvision==0.28.0', 'mmcv==2.1.0', 'mmpretrain==1.2.0'} <= set(
        _constraints(lines))
    wheel_dir = f'{tmp_path}/wheels/torch2.13.0-cpu'
    build = next(line for line in lines if 'pip wheel' in line).split()
    assert build[1:3] == ['MAX_JOBS=3', f'{tmp_path}/venv/bin/python']
    assert build[-3:] == ['-w', wheel_dir, 'mmcv==2.1.0'] and '--no-build-isolation' in build
    assert any(line.endswith(f'--no-deps {wheel_dir}/mmcv-2.1.0-*.whl') for line in lines)
    assert 'FORCE_CUDA' not in result.stdout and 'CUDA_HOME' not in result.stdout
    assert [line.split()[1] for line in lines if line.split()[1].endswith('/6')] == [
        f'{i}/6' for i in range(1, 7)]


def test_older_torch_release_gets_its_torchvision_numpy_and_own_mmcv_wheel(tmp_path):
    result = _plan(tmp_path, NAT_MM_DEVICE='cpu', TORCH_VERSION='2.1.2',
                   NAT_MM_WHEEL_CACHE=str(tmp_path / 'wheels'))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    torch_line = next(line for line in lines if 'torch==2.1.2' in line and '-m pip' in line)
    assert torch_line.split()[-3:] == ['torch==2.1.2', 'torchvision==0.16.2', 'numpy<2']
    assert {'torch==2.1.2', 'torchvision==0.16.2', 'numpy<2'} <= set(_constraints(lines))
    assert 'torch==2.13.0' not in result.stdout
    assert f'-w {tmp_path}/wheels/torch2.1.2-cpu mmcv==2.1.0' in result.stdout


def test_unknown_torch_release_is_refused_with_the_known_ones(tmp_path):
    result = _plan(tmp_path, TORCH_VERSION='2.0.1')
    assert result.returncode == 1 and result.stdout == ''
    message = result.stderr.strip()
    assert message.startswith('[setup] ERROR: TORCH_VERSION=2.0.1 is not one of the releases')
    assert '2.13.0, 2.1.2' in message and 'scripts/torch_versions.txt' in message


def test_cuda_plan_builds_mmcv_with_the_toolkit_and_torch_cuda_build(tmp_path):
    toolkit = _toolkit(tmp_path / 'cuda-13.0', '13.0')
    result = _plan(tmp_path, NAT_MM_DEVICE='cuda', CUDA_HOME=str(toolkit),
                   TORCH_CUDA_ARCH_LIST='8.0;9.0', NAT_MM_WHEEL_CACHE=str(tmp_path / 'wheels'))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('[plan] device: cuda (NAT_MM_DEVICE=cuda)')
    assert f'nvcc 13.0 in CUDA_HOME={toolkit} matches torch\'s CUDA 13.0' in lines[1]
    torch_line = next(line for line in lines if 'torch==2.13.0' in line and '-m pip' in line)
    # the site's pip configuration (find-links holding a +cpu wheel) is ignored for torch
    assert '-m pip --isolated install' in torch_line and ' -c ' in torch_line
    build = next(line for line in lines if 'pip wheel' in line).split()
    wheel_dir = f'{tmp_path}/wheels/torch2.13.0-cu13.0-sm8.0_9.0'
    assert build[1:5] == [f'CUDA_HOME={toolkit}', 'FORCE_CUDA=1', 'TORCH_CUDA_ARCH_LIST=8.0;9.0',
                          'MAX_JOBS=3']
    assert build[5].startswith('CPATH=<') and 'nvidia/*/include>' in ' '.join(build)
    assert build[-3:] == ['-w', wheel_dir, 'mmcv==2.1.0'] and '--no-build-isolation' in build
    assert any(line.endswith(f'--no-deps {wheel_dir}/mmcv-2.1.0-*.whl') for line in lines)
    assert 'CUDA 13.0 in torch and mmcv' in lines[-1]


def test_cuda_plan_follows_a_cuda_12_index(tmp_path):
    """TORCH_INDEX_URL ending in /cu126 means torch's CUDA 12.6 build: a 12.x toolkit passes."""
    toolkit = _toolkit(tmp_path / 'cuda-12.8', '12.8')
    result = _plan(tmp_path, NAT_MM_DEVICE='cuda', CUDA_HOME=str(toolkit),
                   TORCH_INDEX_URL='https://example.invalid/whl/cu126', TORCH_PIP_ISOLATED='0')
    assert result.returncode == 0, result.stderr
    torch_line = next(line for line in result.stdout.splitlines()
                      if 'torch==2.13.0' in line and '-m pip' in line)
    assert '--isolated' not in torch_line
    assert '--extra-index-url https://example.invalid/whl/cu126' in torch_line
    assert "matches torch's CUDA 12.6" in result.stdout


@pytest.mark.parametrize('case, expected', [
    ('no nvcc', 'has no bin/nvcc: point CUDA_HOME at a CUDA 13.0 toolkit'),
    ('nvcc 12', "nvcc 12.8 ({toolkit}) and torch's CUDA 13.0 differ in major version; mmcv's "
                'CUDA ops need a CUDA 13.x toolkit'),
    ('no disk', 'the CUDA install needs 1000000 GB free for {venv}'),
])
def test_cuda_install_stops_before_any_long_step(tmp_path, case, expected):
    toolkit = tmp_path / 'toolkit'
    if case == 'no nvcc':
        toolkit.mkdir()
    else:
        _toolkit(toolkit, '12.8' if case == 'nvcc 12' else '13.0')
    env = dict(NAT_MM_DEVICE='cuda', CUDA_HOME=str(toolkit))
    if case == 'no disk':
        env['NAT_MM_CUDA_DISK_GB'] = '1000000'
    result = _plan(tmp_path, **env)
    assert result.returncode == 1
    assert result.stdout == ''
    message = result.stderr.strip()
    assert message.startswith('[setup] ERROR: ') and len(message.splitlines()) == 1
    assert expected.format(toolkit=toolkit, venv=tmp_path / 'venv') in message


def test_unknown_argument_is_refused():
    bad = subprocess.run(['bash', 'scripts/setup_env.sh', '--plan'], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1
    assert "unknown argument '--plan' (usage: setup_env.sh [--print-plan])" in bad.stderr
