"""nat_mm.compat: the torch minimum that setup.cfg declares, and the features newer than it.

Which torch releases the suite passes on is shown by running it there
(``make test-torch TORCH=all``, docs/environments.md), not by looking API names up."""
import configparser
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from nat_mm import compat
from nat_mm.ops import backends, functional, na2d, na2d_reference

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_declares_the_minimum_the_package_checks():
    setup = configparser.ConfigParser()
    setup.read(ROOT / 'setup.cfg')
    torch_line = next(line.strip() for line in setup['options']['install_requires'].splitlines()
                      if line.strip().startswith('torch'))
    assert torch_line == 'torch>=' + '.'.join(map(str, compat.MINIMUM_TORCH))


@pytest.mark.parametrize('version', ['2.0.1', '1.13.1+cu117', '2.0.0a0+git1234'])
def test_an_older_torch_is_refused_in_one_line_naming_both_versions(version):
    with pytest.raises(ImportError) as error:
        compat.check_torch_version(version)
    message = str(error.value)
    assert '\n' not in message
    assert f'torch {version} is installed' in message and 'needs torch >= 2.1' in message
    assert 'pip install "torch>=2.1"' in message


@pytest.mark.parametrize('version', ['2.1.0', '2.1.2+cu121', '2.13.0+cpu', '2.14.1', '3.0.0'])
def test_supported_torch_passes(version):
    compat.check_torch_version(version)


def test_import_nat_mm_on_an_old_torch_stops_with_that_line():
    """The check runs before anything else of nat_mm is imported (a torch that reports an
    old version: the real import path, with torch's version string replaced)."""
    code = 'import torch; torch.__version__ = "2.0.1"; import nat_mm'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'ImportError: nat_mm needs torch >= 2.1, but torch 2.0.1 is installed: upgrade torch '
        '(pip install "torch>=2.1")')


def test_old_triton_is_reported_with_its_version():
    reason = compat.triton_unusable_reason('2.1.0')
    assert reason.startswith('Triton 2.1.0 is older than 3.6')
    assert compat.triton_unusable_reason('3.3.1').startswith('Triton 3.3.1 is older than 3.6')
    assert compat.triton_unusable_reason('3.6.0') is None
    assert compat.triton_unusable_reason('3.7.1+git') is None


def test_installed_triton_state_matches_the_triton_backend():
    """In the pinned stack Triton is new enough (tests/test_stack.py checks it is installed);
    in a torch-matrix venv with an old Triton the backend must say why it is off."""
    from nat_mm.ops import triton_na
    reason = compat.triton_unusable_reason()
    if reason is None:
        assert triton_na.unavailable_reason('cuda') in (None, 'no CUDA device')
    else:
        assert triton_na.unavailable_reason('cuda') == reason
        assert 'triton' not in functional.available_backends('cuda')
        with pytest.raises(ValueError, match=r"backend 'triton' is not available on cpu "
                                             r"\(Triton .* is older than"):
            na2d(*(torch.zeros(1, 1, 7, 7, 4),) * 3, 3, backend='triton')


def test_export_support_matches_torch():
    import inspect
    from torch import export
    has_is_exporting = hasattr(getattr(torch, 'compiler', None), 'is_exporting')
    strict = inspect.signature(export.export).parameters.get('strict')   # torch 2.1: none
    non_strict = strict is not None and strict.default is False
    assert (compat.export_unsupported_reason() is None) == (has_is_exporting and non_strict)
    assert compat.is_exporting() is False
    if compat.export_unsupported_reason() is not None:
        with pytest.raises(RuntimeError, match=r'export_onnx: torch .*\. Export in an '
                                               r'environment with a newer torch'):
            compat.require_export_support('export_onnx')


def test_custom_fwd_bwd_keep_the_functions_working():
    forward, backward = compat.custom_fwd_bwd(lambda ctx, x: x * 2, lambda ctx, g: g * 2, 'cpu')
    function = type('Double', (torch.autograd.Function,),
                    {'forward': staticmethod(forward), 'backward': staticmethod(backward)})
    x = torch.ones(3, requires_grad=True)
    function.apply(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 2.))


def test_a_default_backend_that_cannot_run_is_skipped_with_one_warning(monkeypatch):
    """The path a CUDA machine with an old Triton takes (its default order starts with a
    backend that reports a reason), exercised on the CPU's default order."""
    calls = []
    off = backends.Backend('off', lambda *args: calls.append(args),
                           is_available=lambda device_type: False,
                           unavailable_reason=lambda device_type: 'Triton 2.1.0 is too old')
    monkeypatch.setitem(backends.BACKENDS, 'off', off)
    monkeypatch.setitem(backends.DEFAULT_ORDER, 'cpu', ('off', 'csr'))
    monkeypatch.setattr(functional, '_warned_unavailable', set())
    query, key, value = torch.randn(3, 1, 2, 9, 9, 4, dtype=torch.float64)

    with pytest.warns(UserWarning) as record:
        out = na2d(query, key, value, 3)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        na2d(query, key, value, 3)   # warned once per (backend, device type)

    assert [str(w.message) for w in record] == [
        "nat_mm: the 'off' neighbourhood-attention backend is off on cpu "
        "(Triton 2.1.0 is too old); using 'csr' instead"]
    assert not calls
    torch.testing.assert_close(out, na2d_reference(query, key, value, 3), rtol=0, atol=1e-12)



def test_flex_attention_state_matches_the_flex_backend():
    """On the pinned torch FlexAttention runs; on a torch-matrix venv of torch 2.1 / 2.4 the
    backend says what is missing."""
    from nat_mm.ops import flex
    reason = compat.flex_attention_unusable_reason()
    assert flex.unavailable_reason('cpu') == reason
    if reason is None:
        assert 'flex' in functional.available_backends('cpu')
    else:
        assert reason == (f'torch {torch.__version__} has no FlexAttention '
                          '(torch.nn.attention.flex_attention)') or 'seq_lengths' in reason
        assert 'flex' not in functional.available_backends('cpu')


def test_autocast_support_is_what_a_matmul_under_autocast_gives():
    assert compat.autocast_supports('cpu', torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not compat.autocast_supports('cpu', torch.float64)   # never an autocast dtype
