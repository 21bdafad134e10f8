"""README "Adding nat_mm to an existing MMDetection/MMSegmentation environment": installing
nat_mm into an environment that has torch, mmcv, numpy and mmengine changes none of them.

pip's own resolver answers (``--dry-run --report``), in the environment the suite runs in
(the pinned stack, or the torch 2.1 stack of ``TORCH_VERSION=2.1.2 make setup``)."""
import configparser
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: What an existing OpenMMLab environment has built against each other.
UNTOUCHABLE = ('torch', 'mmcv', 'numpy', 'mmengine', 'torchvision', 'triton')


def _name(requirement):
    return re.split(r'[<>=!~;\[ ]', requirement, maxsplit=1)[0].strip().lower().replace('_', '-')


def _install_report(tmp_path, *args):
    report = tmp_path / 'report.json'
    result = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--dry-run', '--quiet', '--report', str(report),
         '--no-build-isolation', '--disable-pip-version-check', *args, str(ROOT)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(report.read_text())['install']


def test_install_requires_is_only_what_the_operator_and_backbone_import():
    setup = configparser.ConfigParser()
    setup.read(ROOT / 'setup.cfg')
    required = {_name(line) for line in setup['options']['install_requires'].splitlines()
                if line.strip() and not line.strip().startswith('#')}
    assert required == {'torch', 'mmengine', 'safetensors'}
    torch_line = next(line for line in setup['options']['install_requires'].splitlines()
                      if _name(line) == 'torch')
    assert torch_line.strip() == 'torch>=2.1'   # no upper bound: the installed torch stays


def test_pip_install_keeps_torch_mmcv_numpy_and_mmengine(tmp_path):
    installed = {dist.metadata['Name'].lower().replace('_', '-')
                 for dist in importlib.metadata.distributions()}
    assert {'torch', 'mmengine', 'numpy'} <= installed

    to_install = _install_report(tmp_path)

    names = {_name(item['metadata']['name']): item['metadata']['version'] for item in to_install}
    assert 'nat-mm' in names
    moved = {name: version for name, version in names.items() if name in UNTOUCHABLE}
    assert not moved, f'pip would install {moved} into this environment'
    # anything else pip adds is a dependency this environment lacks, and small
    assert set(names) - {'nat-mm'} <= {'safetensors'}, names
