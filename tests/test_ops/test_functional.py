"""``na2d``: every CPU backend against the reference, the backend seam, argument checks."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nat_mm.ops import (BackendError, NeighborhoodAttention2D, available_backends, na2d,
                        na2d_reference, na_backend, register_backend)
from nat_mm.ops import backends, functional
from nat_mm.ops.reference import window_1d
from na_testing import assert_matches_reference, bad_na2d_calls, make_qkv, make_rpb

# (height, width, kernel, dilation): every kernel 3..13 and dilation 1..4, borders on
# both axes, non-square maps, maps exactly K*d wide, a map of several windows.
CASES = [
    (7, 7, 7, 1), (8, 15, 3, 2), (13, 9, 3, 3), (13, 9, 5, 1), (15, 16, 5, 3),
    (33, 47, 7, 1), (19, 23, 9, 2), (33, 34, 11, 3), (14, 27, 13, 1), (29, 30, 7, 4),
    (12, 17, 3, 4),
]


@pytest.mark.parametrize('with_rpb', [True, False], ids=['rpb', 'no_rpb'])
@pytest.mark.parametrize('height,width,kernel,dilation', CASES)
def test_backend_matches_reference(backend_na2d, height, width, kernel, dilation, with_rpb):
    qkv, q, _, _ = make_qkv(2, 2, height, width, 8)
    assert not q.is_contiguous()
    rpb = make_rpb(2, kernel) if with_rpb else None
    grad_out = torch.randn(2, 2, height, width, 8)
    assert_matches_reference(backend_na2d, qkv, kernel, dilation, rpb, grad_out)


@pytest.mark.parametrize('kernel,dilation,height,width', [(3, 1, 5, 6), (3, 2, 7, 9)])
def test_gradcheck_float64(backend_na2d, kernel, dilation, height, width):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, height, width, 4, generator=gen, dtype=torch.float64,
                           requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 2 * kernel - 1, 2 * kernel - 1, generator=gen, dtype=torch.float64,
                      requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *args: backend_na2d(*args[:3], kernel, dilation, rpb=args[3]), (q, k, v, rpb),
        fast_mode=True)


def test_frozen_rpb_and_no_grad_match_reference(backend_na2d):
    _, q, k, v = make_qkv(2, 2, 12, 10, 8)
    rpb = make_rpb(2, 5).detach()
    expected = na2d_reference(q, k, v, 5, 1, rpb)
    torch.testing.assert_close(backend_na2d(q, k, v, 5, 1, rpb), expected, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(backend_na2d(q, k, v, 5, 1, rpb), expected,
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('with_rpb_grad', [True, False])
def test_bfloat16_matches_float32_reference(backend_na2d, with_rpb_grad):
    _, q, k, v = make_qkv(1, 2, 20, 24, 16)
    rpb = make_rpb(2, 7).requires_grad_(with_rpb_grad)
    expected = na2d_reference(q, k, v, 7, 1, rpb)
    got = backend_na2d(q.bfloat16(), k.bfloat16(), v.bfloat16(), 7, 1, rpb)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_a_bad_key_reaches_only_the_queries_whose_window_holds_it(backend_na2d, bad):
    """Locality of logits: a NaN/inf key (y0, x0) may spoil exactly the
    queries whose windows contain it (worked out from the definition), no other."""
    height, width, kernel, dilation, (y0, x0) = 16, 18, 5, 2, (3, 14)
    _, q, k, v = make_qkv(1, 2, height, width, 8)
    k = k.detach().clone()
    k[:, :, y0, x0] = bad
    out = backend_na2d(q.detach(), k, v.detach(), kernel, dilation, make_rpb(2, kernel).detach())
    rows = torch.tensor([y0 in window_1d(y, height, kernel, dilation)[0] for y in range(height)])
    cols = torch.tensor([x0 in window_1d(x, width, kernel, dilation)[0] for x in range(width)])
    holds_key = rows[:, None] & cols[None, :]
    spoiled = ~torch.isfinite(out).all(-1)          # (B, heads, H, W)
    assert (spoiled == holds_key).all()


def test_dropout_drops_and_rescales_the_weights_whenever_it_is_passed(backend_na2d):
    """With v = identity over positions the output row of a query is its
    attention weights: each is dropped (0) or kept and scaled by 1 / (1 - p),
    with gradients recorded or not (the module passes 0 in eval mode)."""
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 2, 5, 5, 25, generator=gen) for _ in range(2))
    v = torch.eye(25).view(1, 1, 5, 5, 25).expand(2, 2, -1, -1, -1)
    weights = na2d_reference(q, k, v, 3)
    in_window = weights > 0
    for grad_enabled in (True, False):
        with torch.set_grad_enabled(grad_enabled):
            dropped = backend_na2d(q, k, v, 3, dropout_p=0.5)
        kept = dropped[in_window] != 0
        assert (dropped[~in_window] == 0).all()
        torch.testing.assert_close(dropped[in_window][kept], 2 * weights[in_window][kept])
        assert 0.3 < kept.float().mean() < 0.7


def test_module_passes_no_dropout_in_eval_mode(backend_na2d):
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(16, 2, kernel_size=3, attn_drop=0.5)
    x = torch.randn(1, 6, 6, 16)
    backend = backend_na2d.keywords['backend']
    with na_backend(backend), torch.no_grad():
        assert not torch.equal(attn.train()(x), attn.eval()(x))     # train: dropout applied
        torch.testing.assert_close(attn.eval()(x), attn.eval()(x), rtol=0, atol=0)
        attn.attn_drop = 0.
        torch.testing.assert_close(attn.eval()(x), attn.train()(x), atol=1e-6, rtol=1e-5)


def test_dropout_backward_uses_the_forward_mask(backend_na2d):
    """Under a fixed seed the dropped attention is a fixed function: gradcheck."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 7, 4, generator=gen, dtype=torch.float64,
                           requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)

    def dropped(*args):
        torch.manual_seed(0)
        return backend_na2d(*args[:3], 3, 1, rpb=args[3], dropout_p=0.3)

    assert torch.autograd.gradcheck(dropped, (q, k, v, rpb), fast_mode=True)


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:   # not sparse
                self.largest = max(self.largest, t.numel())
        return out


def test_backend_does_not_materialise_kernel_squared_copies(backend_na2d):
    """The legacy design holds K*K = 49 copies of K; the backends stay far below."""
    _, q, k, v = make_qkv(1, 2, 64, 64, 32)
    rpb = make_rpb(2, 7)
    with _LargestTensor() as fast:
        backend_na2d(q, k, v, 7, 1, rpb).sum().backward()
    with _LargestTensor() as slow:
        na2d_reference(q, k, v, 7, 1, rpb).sum().backward()
    assert slow.largest >= 49 * k.numel()
    assert fast.largest < 49 * k.numel() / 2


# The seam ---------------------------------------------------------------------------


class _Recorder:
    """A backend that records its calls (registered by the tests as ``record``)."""

    def __init__(self, name, error=None):
        self.calls = []
        self.error = error
        self.record = backends.Backend(name, self._run, self.is_available)

    def is_available(self, device_type):
        return device_type == 'cpu'

    def _run(self, query, *args):
        self.calls.append(query.shape)
        if self.error:
            raise self.error
        return na2d_reference(query, *args[:4])


@pytest.fixture
def extra_backend(monkeypatch):
    """Registers a recording backend ``name`` into the seam for one test."""
    def register(name, error=None, first=False):
        recorder = _Recorder(name, error)
        monkeypatch.setitem(backends.BACKENDS, name, recorder.record)
        if first:
            monkeypatch.setitem(backends.DEFAULT_ORDER, 'cpu',
                                (name, *backends.DEFAULT_ORDER['cpu']))
        monkeypatch.setattr(functional, '_failed', set())
        return recorder
    return register


def test_cpu_defaults_to_csr_and_lists_it():
    assert 'csr' in available_backends('cpu')
    assert backends.DEFAULT_ORDER['cpu'][0] == 'csr'
    assert set(available_backends()) >= set(available_backends('cpu'))


def test_explicit_backend_and_context_choose_the_backend(extra_backend):
    recorder = extra_backend('recorder')
    _, q, k, v = make_qkv(1, 2, 9, 9, 8)
    na2d(q, k, v, 3)
    assert recorder.calls == []
    na2d(q, k, v, 3, backend='recorder')
    assert len(recorder.calls) == 1
    attn = NeighborhoodAttention2D(16, 2, kernel_size=3)
    with na_backend('recorder'):
        attn(torch.randn(1, 9, 9, 16))
        na2d(q, k, v, 3, backend='csr')              # the argument wins over the context
        with na_backend(None):
            na2d(q, k, v, 3)
    assert len(recorder.calls) == 2
    na2d(q, k, v, 3)                                 # the context is gone
    assert len(recorder.calls) == 2


def test_unknown_or_unavailable_backend_is_a_value_error_naming_the_available_ones():
    _, q, k, v = make_qkv(1, 2, 9, 9, 8)
    with pytest.raises(ValueError,
                       match=r"backend 'flash' is unknown; available on cpu: \[.*'csr'"):
        na2d(q, k, v, 3, backend='flash')
    with pytest.raises(ValueError, match="backend 'flash' is unknown"):
        with na_backend('flash'):
            pass


def test_default_backend_that_fails_falls_back_with_one_warning(extra_backend):
    broken = extra_backend('broken', error=BackendError('no kernel for this GPU'), first=True)
    _, q, k, v = make_qkv(1, 2, 9, 9, 8)
    with pytest.warns(UserWarning, match="'broken'.*no kernel for this GPU.*using 'csr'"):
        out = na2d(q, k, v, 3)
    torch.testing.assert_close(out, na2d_reference(q, k, v, 3), atol=1e-5, rtol=1e-4)
    na2d(q, k, v, 3)                                  # skipped from now on: no second try
    assert len(broken.calls) == 1
    with pytest.raises(BackendError, match='no kernel'):
        na2d(q, k, v, 3, backend='broken')            # an explicit choice is not replaced


def test_availability_is_asked_once_per_device_type(extra_backend):
    """Automatic and explicit calls and available_backends() ask a backend whether it can
    run once per device type; clearing the cache asks again."""
    asked = []
    recorder = extra_backend('counted', first=True)
    counted = backends.Backend('counted', recorder.record.function,
                               lambda device_type: asked.append(device_type) or True)
    backends.BACKENDS['counted'] = counted            # restored by the fixture's monkeypatch
    _, q, k, v = make_qkv(1, 2, 9, 9, 8)
    for _ in range(3):
        na2d(q, k, v, 3)
        na2d(q, k, v, 3, backend='counted')
        assert 'counted' in available_backends('cpu')
        available_backends('meta')
    assert len(recorder.calls) == 6
    assert sorted(asked) == ['cpu', 'meta']
    backends.clear_availability_cache()
    na2d(q, k, v, 3)
    assert sorted(asked) == ['cpu', 'cpu', 'meta']


def test_a_record_runs_without_being_registered(extra_backend):
    """na2d(backend=record) and na_backend(record) use a Backend record that is not in the
    registry, and leave the registry as it was."""
    recorder = _Recorder('unlisted')
    before = dict(backends.BACKENDS)
    _, q, k, v = make_qkv(1, 2, 9, 9, 8)
    na2d(q, k, v, 3, backend=recorder.record)
    with na_backend(recorder.record):
        na2d(q, k, v, 3)
    assert len(recorder.calls) == 2 and backends.BACKENDS == before
    off = backends.Backend('off', recorder.record.function, lambda device_type: False,
                           lambda device_type: 'needs a GPU')
    with pytest.raises(ValueError, match=r"backend 'off' is not available on cpu \(needs a GPU\); "
                                         r"available on cpu: \[.*'csr'.*use backend='csr'"):
        na2d(q, k, v, 3, backend=off)


def test_register_backend_adds_a_choosable_backend_that_is_never_a_default(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, 'mine', None)   # removed again after the test
    recorder = _Recorder('mine')
    record = register_backend('mine', recorder.record.function)
    assert backends.BACKENDS['mine'] is record and record.supports_dropout
    assert 'mine' in available_backends('cpu') and 'mine' in available_backends('meta')
    _, q, k, v = make_qkv(1, 2, 9, 9, 8)
    na2d(q, k, v, 3)
    assert recorder.calls == []
    with na_backend('mine'):
        na2d(q, k, v, 3)
    assert len(recorder.calls) == 1


def test_a_default_without_dropout_is_passed_over_for_dropout(extra_backend):
    """can_run: a backend without dropout runs the calls without it and leaves the calls
    with dropout to the next default."""
    recorder = extra_backend('no_dropout', first=True)
    record = backends.Backend('no_dropout', recorder.record.function,
                              recorder.is_available, supports_dropout=False)
    backends.BACKENDS['no_dropout'] = record           # restored by the fixture's monkeypatch
    _, q, k, v = make_qkv(1, 2, 9, 9, 8)
    assert record.can_run(q, 0.0) and not record.can_run(q, 0.1)
    assert not record.can_run(q.to('meta'), 0.0)
    na2d(q, k, v, 3)
    na2d(q, k, v, 3, dropout_p=0.1)
    assert len(recorder.calls) == 1


def test_na2d_rejects_bad_input():
    for args, kwargs, message in bad_na2d_calls():
        with pytest.raises(ValueError) as error:
            na2d(*args, **kwargs)
        assert str(error.value) == message


@pytest.mark.parametrize('backend', available_backends('cpu'))
def test_every_backend_gives_the_same_errors(backend):
    for args, kwargs, message in bad_na2d_calls():
        with pytest.raises(ValueError) as error:
            na2d(*args, **kwargs, backend=backend)
        assert str(error.value) == message
