"""Generated cases (Hypothesis): every backend that runs on the CPU equals the
gather reference in the output and in the q, k, v and rpb gradients, and
NeighborhoodAttention2D's padding path equals its definition.

The number of examples comes from the profile (tests/conftest.py:
``HYPOTHESIS_PROFILE=ci`` by default, ``soak`` for a long local run). Triton
runs through its interpreter, whose cost grows with the number of programs:
it gets fewer examples and smaller maps, and a share of them runs with the
GPU's tile geometry (``NAT_MM_TRITON_TILES=gpu``).

Tolerances: float64 1e-9 relative (``rtol`` 1e-9, ``atol`` 1e-9 times the
largest magnitude of the expected tensor); float32 ``atol`` 1e-5, ``rtol``
1e-4 against the float64 reference. Triton computes float64 inputs in
float32 (see nat_mm/ops/triton_na.py), so its float64 cases get the float32
tolerances.
"""
import contextlib
import dataclasses
import functools
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from environment import require_backend
from nat_mm.ops import NeighborhoodAttention2D, available_backends, na2d, na2d_reference, na_backend

KERNELS = (3, 5, 7, 9, 11, 13)
MAX_DILATION = 4
#: Elements the reference gathers (B * heads * H * W * K * K * head_dim) at most,
#: so that its K*K copies stay small.
GATHER_BUDGET = 2_500_000
#: Examples of a test relative to the profile's ``max_examples``.
TRITON_SHARE = 0.3
MODULE_SHARE = 0.5
OUTPUTS = ('out', 'dq', 'dk', 'dv', 'drpb')
#: The backends that run on the CPU without an interpreter.
NATIVE_BACKENDS = [name for name in ('csr', 'export') if name in available_backends('cpu')]


def _share(fraction):
    return settings(max_examples=max(1, round(settings.default.max_examples * fraction)))


@dataclasses.dataclass
class Case:
    batch: int
    heads: int
    height: int
    width: int
    head_dim: int
    kernel: int
    dilation: int
    with_rpb: bool
    layout: str          # 'contiguous' or 'qkv_view' (strided views of one qkv tensor)
    dtype: torch.dtype
    seed: int

    def tensors(self):
        """Float64 q, k, v (B, heads, H, W, D), rpb or None, and an output gradient."""
        gen = torch.Generator().manual_seed(self.seed)
        shape = (self.batch, self.heads, self.height, self.width, self.head_dim)
        q, k, v, grad_out = (torch.randn(shape, generator=gen, dtype=torch.float64)
                             for _ in range(4))
        rpb = (torch.randn(self.heads, 2 * self.kernel - 1, 2 * self.kernel - 1, generator=gen,
                           dtype=torch.float64) if self.with_rpb else None)
        return q, k, v, rpb, grad_out


@st.composite
def cases(draw, max_side, max_batch=2, max_heads=3):
    """Cases with maps from K*d to ``max_side`` (odd and even, non-square),
    dilation 1..4 where K*d fits, head_dim 8..64, within :data:`GATHER_BUDGET`."""
    kernel = draw(st.sampled_from([k for k in KERNELS if k <= max_side]))
    dilation = draw(st.integers(1, min(MAX_DILATION, max_side // kernel)))
    window = kernel * dilation
    height = draw(st.integers(window, max_side))
    width = draw(st.integers(window, max_side))
    per_channel = height * width * kernel * kernel
    batch = draw(st.integers(1, max(1, min(max_batch, GATHER_BUDGET // (per_channel * 8)))))
    heads = draw(st.integers(1, max(1, min(max_heads,
                                           GATHER_BUDGET // (batch * per_channel * 8)))))
    head_dim = draw(st.integers(8, max(8, min(64, GATHER_BUDGET // (batch * heads * per_channel)))))
    return Case(batch, heads, height, width, head_dim, kernel, dilation,
                with_rpb=draw(st.booleans()),
                layout=draw(st.sampled_from(['contiguous', 'qkv_view'])),
                dtype=draw(st.sampled_from([torch.float64, torch.float32])),
                seed=draw(st.integers(0, 2 ** 31 - 1)))


def _outputs_and_grads(fn, case, dtype):
    """(out, dq, dk, dv[, drpb]) of ``fn(q, k, v, kernel, dilation, rpb)`` in ``dtype``."""
    q, k, v, rpb, grad_out = case.tensors()
    if case.layout == 'qkv_view':
        qkv = torch.stack([q, k, v]).permute(1, 3, 4, 0, 2, 5).to(dtype)   # (B, H, W, 3, heads, D)
        qkv.requires_grad_(True)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    else:
        q, k, v = (t.to(dtype).requires_grad_(True) for t in (q, k, v))
    inputs = [q, k, v]
    if rpb is not None:
        rpb = rpb.to(dtype).requires_grad_(True)
        inputs.append(rpb)
    out = fn(q, k, v, case.kernel, case.dilation, rpb)
    return (out, *torch.autograd.grad(out, inputs, grad_out.to(dtype)))


def _assert_matches_reference(backend, case, computes_float64=True):
    expected = _outputs_and_grads(na2d_reference, case, torch.float64)
    got = _outputs_and_grads(functools.partial(na2d, backend=backend), case, case.dtype)
    for name, g, e in zip(OUTPUTS, got, expected):
        assert g.dtype == case.dtype, name
        if case.dtype == torch.float64 and computes_float64:
            tol = dict(rtol=1e-9, atol=1e-9 * float(e.abs().max()))
        else:
            tol = dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(g.double(), e, **tol, msg=lambda m, n=name: f'{n}: {m}')


@contextlib.contextmanager
def _environ(name, value):
    """``os.environ[name] = value`` inside the block (None: unset)."""
    old = os.environ.get(name)
    try:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@pytest.mark.parametrize('backend', NATIVE_BACKENDS)
@given(case=cases(max_side=40))
def test_backend_matches_reference(backend, case):
    _assert_matches_reference(backend, case)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA machine runs Triton compiled, not '
                    'interpreted: tests/test_ops/test_triton_na.py runs it on the GPU')
@_share(TRITON_SHARE)
@given(case=cases(max_side=18, max_batch=1, max_heads=1),
       tiles=st.sampled_from([None, 'gpu']))
def test_triton_matches_reference(case, tiles):
    require_backend('triton', 'cpu')
    with _environ('NAT_MM_TRITON_TILES', tiles):
        _assert_matches_reference('triton', case, computes_float64=False)


@_share(MODULE_SHARE)
@given(data=st.data(), heads=st.integers(1, 2), head_dim=st.integers(4, 8),
       backend=st.sampled_from(NATIVE_BACKENDS),
       seed=st.integers(0, 2 ** 31 - 1))
def test_module_on_maps_smaller_than_the_window(data, heads, head_dim, backend, seed):
    """Below K*d the module zero-pads the input on the right/bottom, attends and
    crops: the same as doing so by hand with the reference, with gradients.
    Windows up to 26 keep the reference's gather of the padded map small."""
    kernel = data.draw(st.sampled_from(KERNELS), label='kernel')
    dilation = data.draw(st.integers(1, min(MAX_DILATION, 26 // kernel)), label='dilation')
    window = kernel * dilation
    short = data.draw(st.integers(1, window - 1), label='short side')
    other = data.draw(st.integers(1, window + 3), label='other side')
    height, width = data.draw(st.sampled_from([(short, other), (other, short)]), label='H, W')
    dim = heads * head_dim
    torch.manual_seed(seed)
    attn = NeighborhoodAttention2D(dim, heads, kernel_size=kernel, dilation=dilation).double()
    x = torch.randn(2, height, width, dim, dtype=torch.float64, requires_grad=True)
    params = [x, attn.rpb, attn.qkv.weight, attn.proj.weight]

    with na_backend(backend):
        out = attn(x)
    grads = torch.autograd.grad(out.square().sum(), params)

    padded = F.pad(x, (0, 0, 0, max(0, window - width), 0, max(0, window - height)))
    qkv = attn.qkv(padded).view(*padded.shape[:3], 3, heads, head_dim).permute(3, 0, 4, 1, 2, 5)
    attended = na2d_reference(qkv[0], qkv[1], qkv[2], kernel, dilation, attn.rpb)
    expected = attn.proj(attended.permute(0, 2, 3, 1, 4).flatten(3)[:, :height, :width])
    expected_grads = torch.autograd.grad(expected.square().sum(), params)

    assert out.shape == (2, height, width, dim)
    for got, ref in zip((out, *grads), (expected, *expected_grads)):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))
