"""Skip marks for tests that need a torch feature newer than nat_mm's minimum torch.

The pinned stack has every feature; the torch matrix (dev/torch_matrix.py) runs the suite on
older torch releases, where these tests skip and say which feature is missing.
"""
import pytest
import torch

from nat_mm.compat import can_detect_export

#: Exporting nat_mm (torch.export, ONNX) needs torch.compiler.is_exporting (torch 2.7+).
requires_torch_export = pytest.mark.skipif(
    not can_detect_export(),
    reason=f'torch {torch.__version__} cannot tell nat_mm that it is exporting '
           '(torch.compiler.is_exporting, torch 2.7+): export tests need a newer torch')
