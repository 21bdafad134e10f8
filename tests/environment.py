"""What the environment a test runs in has, and skip marks for what it may lack.

Profiles (``NAT_MM_TEST_PROFILE``): the default is the pinned stack of ``make setup``, where
everything is installed and a missing package fails the tests that need it. ``matrix`` is a
venv of the torch matrix (``dev/torch_matrix.py``: an older or newer torch, mmengine and the
test extras only): there tests that need the OpenMMLab stack (:data:`MATRIX_ABSENT`), or a
torch feature newer than the release, skip and say what is missing.
"""
import importlib.util
import os

import pytest
import torch

from nat_mm.compat import can_detect_export

MATRIX_PROFILE = os.environ.get('NAT_MM_TEST_PROFILE', 'default') == 'matrix'
#: Not installed in a torch-matrix venv, by design.
MATRIX_ABSENT = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'torchvision')

#: Exporting nat_mm (torch.export, ONNX) needs torch.compiler.is_exporting (torch 2.7+).
requires_torch_export = pytest.mark.skipif(
    not can_detect_export(),
    reason=f'torch {torch.__version__} cannot tell nat_mm that it is exporting '
           '(torch.compiler.is_exporting, torch 2.7+): export tests need a newer torch')


def requires_stack(*modules):
    """Skip mark for a test that needs ``modules`` of :data:`MATRIX_ABSENT` in a way the
    conftest cannot see (e.g. in a subprocess): skips in the matrix profile when one is
    missing; in the default profile it never skips (a missing module fails the test)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(MATRIX_PROFILE and bool(missing),
                              reason=f'needs {", ".join(missing)} (not in a torch-matrix venv)')
