"""What a test may find missing, and what happens then: the one place that decides.

``NAT_MM_TEST_PROFILE`` names the environment the suite runs in:

- ``default`` (unset): the pinned venv of ``scripts/setup_env.sh``. Every test dependency
  declared in setup.cfg's ``tests`` extra (environment markers honoured), the OpenMMLab stack
  (mmcv, mmdet, mmseg) and a Triton that runs nat_mm's kernels are part of it: a test that
  needs one that is missing *fails*, naming it and the fix. Only CUDA-only tests skip here
  (no GPU).
- ``matrix``: the torch matrix's venvs (one torch version each, with mmengine and nat_mm's
  test extras only). The OpenMMLab stack (:data:`MATRIX_ABSENT`) is not installed there, and
  the Triton that an old torch pins may be too old for nat_mm's kernels (the ``triton``
  backend then reports itself unavailable): the tests that need those skip, with a reason
  naming what is absent. A missing declared test dependency still fails.

Tests call :func:`require_module` / :func:`require_backend` (at module level too);
tests/conftest.py turns, in the ``matrix`` profile only, a ``ModuleNotFoundError`` of a
:data:`MATRIX_ABSENT` module raised inside any test into such a skip, so that the tests that
import the stack where they use it need no guard of their own.
"""
import configparser
import importlib
import importlib.metadata
import os
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PROFILE_ENV = 'NAT_MM_TEST_PROFILE'
PROFILES = ('default', 'matrix')
#: Top-level modules the torch matrix's venvs do not install -> the pip package to install.
MATRIX_ABSENT = {'mmcv': 'mmcv', 'mmdet': 'mmdet', 'mmseg': 'mmsegmentation',
                 'mmpretrain': 'mmpretrain'}
#: Test dependencies whose version torch pins in the matrix's venvs (torch 2.1 ships
#: Triton 2.1): there an older one than setup.cfg declares is expected.
MATRIX_OLDER = {'triton'}
#: How to install what the pinned venv lacks.
FIX = ('run `bash scripts/setup_env.sh` (or `pip install -e ".[tests]"` in this venv); '
       f'in a venv without the OpenMMLab stack set {PROFILE_ENV}=matrix')
SETUP_CFG = Path(__file__).resolve().parents[1] / 'setup.cfg'


def profile():
    """The profile named by ``NAT_MM_TEST_PROFILE`` (``default`` when unset)."""
    name = os.environ.get(PROFILE_ENV) or 'default'
    if name not in PROFILES:
        raise pytest.UsageError(f'{PROFILE_ENV}={name!r} is not a test profile: set it to one '
                                f'of {", ".join(PROFILES)} or leave it unset (default)')
    return name


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
    """None when ``requirement`` is installed at a version it accepts, else what is wrong
    (one line). In the ``matrix`` profile an older :data:`MATRIX_OLDER` package is accepted."""
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return f'{requirement.name} is not installed (setup.cfg declares {requirement})'
    if requirement.specifier.contains(version, prereleases=True):
        return None
    if profile() == 'matrix' and requirement.name in MATRIX_OLDER:
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
    CPU: through Triton's interpreter, which tests/conftest.py switches on). In the
    ``matrix`` profile an unavailable ``triton`` skips, naming the installed Triton."""
    from nat_mm.ops import available_backends
    if name in available_backends(device_type):
        return
    what = f'the {name!r} attention backend cannot run on {device_type}'
    if name == 'triton':
        try:
            what += f' (triton {importlib.import_module("triton").__version__} imports'
        except ImportError as error:
            what += f' (triton cannot be imported: {error}'
        what += f'; TRITON_INTERPRET={os.environ.get("TRITON_INTERPRET")!r})'
    missing(what, absent_in_matrix=name == 'triton')


def absent_in_matrix(error):
    """The absent module a ``ModuleNotFoundError`` names, when it is one the ``matrix``
    profile lacks and that profile is on; else None. (MMEngine's Config raises one without a
    name for the package of a ``package::path`` base config: "<pip name> is not installed".)"""
    if profile() != 'matrix' or not isinstance(error, ModuleNotFoundError):
        return None
    top = (error.name or '').split('.')[0]
    if top in MATRIX_ABSENT:
        return top
    return next((module for module, package in MATRIX_ABSENT.items()
                 if str(error).startswith(f'{package} is not installed')), None)
