"""Shared by every test: the Triton interpreter flag, the Hypothesis profiles, and the one
way to load a script of tools/ (or dev/).

Without CUDA, Triton kernels run through Triton's interpreter: the flag must
be set before the kernels are defined (nat_mm.ops.triton_na decorates them at
import), so it is set here, before any test module imports nat_mm.

Hypothesis profiles of the property tests (``tests/*/test_*_properties.py``),
chosen with ``HYPOTHESIS_PROFILE`` (default ``ci``):

- ``ci``: derandomized (the same examples on every run), a fixed number of
  examples; a failure prints the reproducing example and its
  ``@reproduce_failure`` blob.
- ``soak``: random examples, many more; for a long local run
  (``HYPOTHESIS_PROFILE=soak pytest tests -k properties``).
"""
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

# No 'explain' phase: it reruns a failing example hundreds of times (minutes here).
_COMMON = dict(deadline=None, print_blob=True,
               phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile('ci', max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile('soak', max_examples=2200, **_COMMON)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))

REPO_ROOT = Path(__file__).resolve().parents[1]


def _script_path(name):
    """REPO_ROOT/<name>.py, e.g. 'tools/analysis_tools/get_flops'; a missing one fails here."""
    path = REPO_ROOT / f'{name}.py'
    if not path.is_file():
        raise FileNotFoundError(f'no script {path}')
    return path


def _load_script(name):
    path = _script_path(name)
    spec = importlib.util.spec_from_file_location(name.replace('/', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def load_tool():
    """Function: ``load_tool('analysis_tools/get_flops')`` is tools/analysis_tools/get_flops.py
    as a module (tools/ is not a package), loaded afresh."""
    return lambda name: _load_script(f'tools/{name}')


@pytest.fixture(scope='session')
def tool_path():
    """Function: the path of tools/<name>.py, to run the script in a subprocess."""
    return lambda name: _script_path(f'tools/{name}')


@pytest.fixture(scope='session')
def load_dev_script():
    """Function: ``load_dev_script('gpu_check')`` is dev/gpu_check.py as a module."""
    return lambda name: _load_script(f'dev/{name}')
