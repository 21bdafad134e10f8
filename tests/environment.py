"""What the environment a test runs in has, and what a test does when something is missing:
the one place that decides.

Profiles (``NAT_MM_TEST_PROFILE``):

- ``default`` (unset): the pinned stack of ``make setup``. Every test dependency declared in
  setup.cfg's ``tests`` extra (environment markers honoured), the OpenMMLab stack and a
  Triton that runs nat_mm's kernels are part of it: a test that needs one that is missing
  *fails*, naming it and the fix (tests/test_stack.py checks them all). Only tests of the
  other kind of machine skip (CUDA-only ones without CUDA, CPU-only ones with it).
- ``matrix``: a venv of the torch matrix (``dev/torch_matrix.py``: an older or newer torch,
  mmengine and the test extras only). There the tests that need the OpenMMLab stack
  (:data:`MATRIX_ABSENT`), a Triton that runs nat_mm's kernels (an old torch pins an older
  one: the ``triton`` backend reports itself unavailable) or a torch feature newer than the
  release skip and say what is missing. A missing test extra still fails.

Tests call :func:`require_module` / :func:`require_backend` (at module level too) or use the
marks below; tests/conftest.py reports, in the ``matrix`` profile only, a test or a test
module that fails to import a :data:`MATRIX_ABSENT` module as skipped (:func:`absent_in_matrix`),
so that tests importing the stack where they use it need no guard of their own.
"""
import configparser
import importlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

from nat_mm.compat import export_unsupported_reason

PROFILE_ENV = 'NAT_MM_TEST_PROFILE'
PROFILES = ('default', 'matrix')
#: Not installed in a torch-matrix venv, by design: module -> the pip package that has it.
MATRIX_ABSENT = {'mmcv': 'mmcv', 'mmdet': 'mmdet', 'mmseg': 'mmsegmentation',
                 'mmpretrain': 'mmpretrain', 'torchvision': 'torchvision',
                 'pycocotools': 'pycocotools'}
#: How to complete the pinned venv.
FIX = ('run `make setup` (or `pip install -e ".[tests]"` in this venv); in a torch-matrix '
       f'venv without the OpenMMLab stack set {PROFILE_ENV}=matrix')
SETUP_CFG = Path(__file__).resolve().parents[1] / 'setup.cfg'


def profile():
    """The profile ``NAT_MM_TEST_PROFILE`` names (``default`` when unset)."""
    name = os.environ.get(PROFILE_ENV) or 'default'
    if name not in PROFILES:
        raise pytest.UsageError(f'{PROFILE_ENV}={name!r} is not a test profile: set it to one '
                                f'of {", ".join(PROFILES)} or leave it unset (default)')
    return name


MATRIX_PROFILE = profile() == 'matrix'

#: Exporting nat_mm (torch.export, ONNX) needs a torch that can (nat_mm.compat).
requires_torch_export = pytest.mark.skipif(
    export_unsupported_reason() is not None,
    reason=f'export tests need a newer torch: {export_unsupported_reason()}')


def requires_stack(*modules):
    """Skip mark for a test that needs ``modules`` of :data:`MATRIX_ABSENT` in a way the
    conftest cannot see (e.g. in a subprocess): skips in the matrix profile when one is
    missing; in the default profile it never skips (a missing module fails the test)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(MATRIX_PROFILE and bool(missing),
                              reason=f'needs {", ".join(missing)} (not in a torch-matrix venv)')


def declared_test_requirements(setup_cfg=SETUP_CFG):
    """The requirements of setup.cfg's ``tests`` extra that apply to this machine
    (their environment markers evaluated here), as ``packaging`` Requirements."""
    config = configparser.ConfigParser()
    config.read(setup_cfg)
    lines = config['options.extras_require']['tests'].splitlines()
    requirements = [Requirement(line) for line in map(str.strip, lines)
                    if line and not line.startswith('#')]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({'extra': 'tests'})]


def requirement_problem(requirement):
    """None when ``requirement`` is installed at a version it accepts, else what is wrong."""
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return f'{requirement.name} is not installed (setup.cfg declares {requirement})'
    if requirement.specifier.contains(version, prereleases=True):
        return None
    return f'{requirement.name} {version} is installed, setup.cfg declares {requirement}'


def missing(what, absent_in_matrix):
    """Fail the test (or the module) because ``what`` is missing; skip instead in the
    ``matrix`` profile when ``absent_in_matrix``."""
    if absent_in_matrix and profile() == 'matrix':
        pytest.skip(f'{what} ({PROFILE_ENV}=matrix)', allow_module_level=True)
    pytest.fail(f'{what}: the test environment is incomplete; {FIX}', pytrace=False)


def require_module(name):
    """``importlib.import_module(name)``; when it cannot be imported the test fails (skips
    in the ``matrix`` profile for the OpenMMLab stack) with the import error and the fix."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing(f'{name} cannot be imported ({error})',
                absent_in_matrix=name.split('.')[0] in MATRIX_ABSENT)


def require_backend(name, device_type):
    """The attention backend ``name`` must run on ``device_type`` here (``triton`` on the
    CPU: through Triton's interpreter, which tests/conftest.py switches on). ``triton``
    skips, naming the Triton it found, in the ``matrix`` profile and wherever the installed
    Triton is older than the kernels need (the one torch 2.1-2.6 pin: e.g. the torch 2.1
    stack of ``TORCH_VERSION=2.1.2 make setup``); a missing Triton fails."""
    from nat_mm.compat import MINIMUM_TRITON, triton_unusable_reason
    from nat_mm.ops import available_backends
    if name in available_backends(device_type):
        return
    what = f'the {name!r} attention backend cannot run on {device_type}'
    too_old = name == 'triton' and 'is older than' in (triton_unusable_reason() or '')
    if too_old:
        pytest.skip(f'{what}: {triton_unusable_reason()} (torch {torch.__version__} pins it; '
                    f'the kernels need Triton >= {".".join(map(str, MINIMUM_TRITON))})',
                    allow_module_level=True)
    if name == 'triton':
        try:
            what += f' (triton {importlib.import_module("triton").__version__} imports'
        except ImportError as error:
            what += f' (triton cannot be imported: {error}'
        what += f'; TRITON_INTERPRET={os.environ.get("TRITON_INTERPRET")!r})'
    missing(what, absent_in_matrix=name == 'triton')


def absent_in_matrix(error):
    """The :data:`MATRIX_ABSENT` module whose absence raised ``error`` when the ``matrix``
    profile is on, else None. (MMEngine's Config raises a ModuleNotFoundError without a name
    for the package of a ``package::path`` base config: "<pip name> is not installed".)"""
    if profile() != 'matrix' or not isinstance(error, ModuleNotFoundError):
        return None
    top = (error.name or '').split('.')[0]
    if top in MATRIX_ABSENT:
        return top
    return next((module for module, package in MATRIX_ABSENT.items()
                 if str(error).startswith(f'{package} is not installed')), None)
