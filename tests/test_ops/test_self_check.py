"""The first-use self-check of the Triton kernels (nat_mm/ops/self_check.py) in the backend
seam: a kernel broken on purpose is caught with one warning and the CSR backend takes over;
a correct kernel passes, and the check runs once per (device, dtype).

Without CUDA the kernels run through Triton's interpreter (tests/conftest.py), with CUDA's
default order (triton first) set for the CPU here; the broken-kernel tests run the GPU's
launch plan (NAT_MM_TRITON_TILES=gpu)."""
import re
import warnings

import pytest
import torch

from na_testing import make_qkv, make_rpb
from nat_mm.ops import BackendError, na2d, na2d_reference
from nat_mm.ops import backends, self_check, triton_na

pytest.importorskip('triton')
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
pytestmark = pytest.mark.skipif(not triton_na.is_available(DEVICE),
                                reason='Triton cannot run kernels here')
#: Kernel launches of one probe: every case, one forward and two backward launches.
PROBE_LAUNCHES = 3 * len(self_check.PROBE_CASES)


@pytest.fixture
def fresh_seam(monkeypatch):
    """No check results yet, the check on, and CUDA's default order (triton, then csr) on
    this device."""
    monkeypatch.setattr(self_check, '_results', {})
    monkeypatch.delenv(self_check.ENV, raising=False)
    monkeypatch.setitem(backends.DEFAULT_ORDER, DEVICE, ('triton', 'csr'))


@pytest.fixture
def gpu_tiles(monkeypatch):
    monkeypatch.setenv(triton_na.TILES_ENV, 'gpu')


def _inputs(dtype=torch.float32):
    _, q, k, v = make_qkv(1, 2, 9, 10, 16, dtype=dtype)
    rpb = make_rpb(2, 5, dtype=dtype)
    return [t.detach().to(DEVICE) for t in (q, k, v, rpb)]


def _transposed_rpb(forward_launch):
    """The forward launch of a kernel that reads rpb[h, col, row] instead of [h, row, col]:
    a wrong rpb index."""
    def launch(query, key, value, rpb, *args, **kwargs):
        return forward_launch(query, key, value, rpb.transpose(1, 2), *args, **kwargs)
    return launch


def _failing_launch(kernel, grid, args, meta):
    raise RuntimeError('an illegal memory access was encountered')


@pytest.mark.parametrize('fault', ['wrong rpb index', 'launch error'])
def test_a_broken_kernel_is_caught_once_and_csr_takes_over(
        fresh_seam, gpu_tiles, monkeypatch, fault):
    if fault == 'wrong rpb index':
        monkeypatch.setattr(triton_na, 'forward_launch',
                            _transposed_rpb(triton_na.forward_launch))
        expected_problem = (r'worst relative error \d\.\de[+-]\d\d in the '
                            r'(output|(q|k|v|rpb) gradient)')
    else:
        monkeypatch.setattr(triton_na, '_launch', _failing_launch)
        expected_problem = 'raised RuntimeError: an illegal memory access'
    q, k, v, rpb = _inputs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        first = na2d(q, k, v, 5, 1, rpb)
        second = na2d(q, k, v, 5, 1, rpb)
    messages = [str(w.message) for w in caught if 'self-check' in str(w.message)]
    assert len(messages) == 1, messages
    assert re.search(
        rf"'triton' backend .*self-check on {DEVICE}.*float32; torch .*, Triton \d.*"
        rf"{expected_problem}.*case 'K.*'.*using 'csr'", messages[0]), messages[0]
    expected = na2d(q, k, v, 5, 1, rpb, backend='csr')
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert self_check.failed('triton', q.device, torch.float32)
    with pytest.raises(BackendError, match=r"self-check.*use backend='csr' \(or "
                                           r"NAT_MM_SELF_CHECK=0 to run it anyway\)"):
        na2d(q, k, v, 5, 1, rpb, backend='triton')


def test_the_broken_kernel_passes_when_the_check_is_off(fresh_seam, monkeypatch):
    """NAT_MM_SELF_CHECK=0: no probe, the (broken) kernels run, wrong."""
    monkeypatch.setenv(self_check.ENV, '0')
    monkeypatch.setattr(triton_na, 'forward_launch', _transposed_rpb(triton_na.forward_launch))
    q, k, v, rpb = _inputs()
    start = triton_na.launch_count()
    out = na2d(q, k, v, 5, 1, rpb)
    assert triton_na.launch_count() - start == 1
    assert not torch.allclose(out, na2d_reference(q, k, v, 5, 1, rpb), atol=1e-3)


def test_a_correct_kernel_passes_once_per_device_and_dtype(fresh_seam):
    """The first call for (device, float32) runs the probe, the second does not; float64
    is checked again. No warning, and the kernels' results."""
    q, k, v, rpb = _inputs()
    launches = []
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for dtype in (torch.float32, torch.float32, torch.float64):
            start = triton_na.launch_count()
            out = na2d(*(t.to(dtype) for t in (q, k, v)), 5, 1, rpb.to(dtype))
            launches.append(triton_na.launch_count() - start)
            torch.testing.assert_close(out.double(), na2d_reference(
                q.double(), k.double(), v.double(), 5, 1, rpb.double()), atol=1e-5, rtol=1e-4)
    assert launches == [PROBE_LAUNCHES + 1, 1, PROBE_LAUNCHES + 1]
    assert set(self_check._results) == {('triton', q.device, torch.float32),
                                        ('triton', q.device, torch.float64)}
    assert not self_check.failed('triton', q.device, torch.float32)


def test_backends_without_a_check_are_not_probed(fresh_seam):
    q, k, v, rpb = _inputs()
    na2d(q, k, v, 5, 1, rpb, backend='csr')
    assert self_check._results == {}


def test_bad_env_value_names_the_fix(fresh_seam, monkeypatch):
    monkeypatch.setenv(self_check.ENV, 'off')
    q, k, v, rpb = _inputs()
    with pytest.raises(ValueError, match=r"NAT_MM_SELF_CHECK='off': set it to 0 .* or 1"):
        na2d(q, k, v, 5, 1, rpb)
