"""The Triton backend (nat_mm/ops/triton_na.py) against the gather reference
and NATTEN 0.17.5's own numbers. On a machine without CUDA the kernels run
through Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so
the shapes are tiny; with CUDA they run compiled on the GPU."""
import functools

import pytest
import torch

from environment import require_backend
from na_testing import bad_na2d_calls, load_golden
from nat_mm.ops import available_backends, functional, na2d, na2d_reference, triton_na
from nat_mm.ops.reference import window_1d

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
require_backend('triton', DEVICE)


def _inputs(batch, heads, height, width, head_dim, kernel, with_rpb=True, seed=0):
    """Non-contiguous q, k, v cut from one projection (as the module makes
    them), rpb and a gradient for the output, float64 on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, height, width, 3, heads, head_dim, generator=gen,
                      dtype=torch.float64)
    rpb = (torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen,
                       dtype=torch.float64) if with_rpb else None)
    grad_out = torch.randn(batch, heads, height, width, head_dim, generator=gen,
                           dtype=torch.float64)
    return qkv, rpb, grad_out


def _run(fn, qkv, rpb, grad_out, kernel, dilation, dtype, scale=None, dropout_p=0.0):
    """Output and gradients (q, k, v[, rpb]) of ``fn`` in ``dtype`` on DEVICE."""
    qkv = qkv.detach().to(DEVICE, dtype).requires_grad_(True)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    inputs = [q, k, v]
    if rpb is not None:
        rpb = rpb.detach().to(DEVICE, dtype).requires_grad_(True)
        inputs.append(rpb)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = fn(q, k, v, kernel, dilation, rpb, scale, dropout_p)
    return (out, *torch.autograd.grad(out, inputs, grad_out.to(DEVICE, dtype)))


def _assert_all_close(got, expected, atol, rtol, rpb_atol=None):
    names = ['out', 'dq', 'dk', 'dv', 'drpb']
    for name, g, e in zip(names, got, expected):
        tol = rpb_atol if name == 'drpb' and rpb_atol is not None else atol
        torch.testing.assert_close(g.double().cpu(), e.double().cpu(), atol=tol, rtol=rtol,
                                   msg=lambda m, name=name: f'{name}: {m}')


@pytest.fixture(params=['default', pytest.param('gpu', marks=pytest.mark.slow)])
def tiles(request, monkeypatch):
    """The default launch plan, then exactly the GPU's (through the
    interpreter when there is no GPU)."""
    if request.param == 'gpu':
        monkeypatch.setenv(triton_na.TILES_ENV, 'gpu')
    return request.param


# (B, heads, H, W, head_dim, K, dilation, rpb): every tile shape (8x8 for
# K <= 7, 8x4 above), several tiles and dilation groups, maps of exactly K*d,
# head_dim 16, 32 and 24 (padded to 32), without rpb.
REFERENCE_CASES = [
    (2, 2, 5, 7, 16, 3, 1, True),
    (1, 1, 12, 13, 16, 3, 4, True),
    (1, 2, 10, 11, 32, 5, 2, True),
    (1, 1, 17, 20, 16, 5, 1, True),
    (1, 1, 9, 7, 24, 7, 1, True),
    (1, 1, 14, 16, 16, 7, 2, False),
    (1, 1, 9, 12, 16, 9, 1, True),
    (1, 1, 11, 18, 32, 11, 1, False),
    (1, 1, 13, 14, 16, 13, 1, True),
]


@pytest.mark.parametrize('batch,heads,height,width,head_dim,kernel,dilation,with_rpb',
                         REFERENCE_CASES)
def test_matches_reference_float32(batch, heads, height, width, head_dim, kernel, dilation,
                                   with_rpb):
    qkv, rpb, grad_out = _inputs(batch, heads, height, width, head_dim, kernel, with_rpb)
    got = _run(triton_na.na2d_triton, qkv, rpb, grad_out, kernel, dilation, torch.float32)
    expected = _run(na2d_reference, qkv, rpb, grad_out, kernel, dilation, torch.float64)
    assert got[0].dtype == torch.float32 and got[0].shape == grad_out.shape
    _assert_all_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_matches_reference_low_precision(tiles, dtype):
    """Half-precision inputs, float32 accumulation: the reference gets the
    same rounded inputs in float64."""
    qkv, rpb, grad_out = _inputs(1, 2, 9, 11, 16, 5, seed=3)
    qkv, rpb, grad_out = (t.to(dtype).double() for t in (qkv, rpb, grad_out))
    got = _run(triton_na.na2d_triton, qkv, rpb, grad_out, 5, 1, dtype)
    expected = _run(na2d_reference, qkv, rpb, grad_out, 5, 1, torch.float64)
    assert all(t.dtype == dtype for t in got)
    tol = 1e-2 if dtype == torch.float16 else 4e-2
    _assert_all_close(got, expected, atol=tol, rtol=tol, rpb_atol=10 * tol)


def _golden_id(case):
    return f"K{case['kernel_size']}d{case['dilation']}_{case['q'].shape[2]}x{case['q'].shape[3]}"


GOLDEN_CASES = load_golden()['cases']
#: The quickest golden cases under the GPU's tiles, one per tile shape and
#: rpb size (all twelve pass; they take minutes through the interpreter).
GOLDEN_GPU_TILE_IDS = ('K7d1_7x7', 'K3d1_9x13', 'K5d2_12x10', 'K11d1_11x11')


@pytest.mark.parametrize('case', GOLDEN_CASES, ids=_golden_id)
def test_matches_natten_golden(case):
    """NATTEN 0.17.5's float64 numbers; float64 inputs are computed in
    float32 by this backend, hence float32 tolerances."""
    _check_golden(case)


@pytest.mark.slow
@pytest.mark.parametrize('case', [c for c in GOLDEN_CASES
                                  if _golden_id(c) in GOLDEN_GPU_TILE_IDS], ids=_golden_id)
def test_matches_natten_golden_gpu_tiles(gpu_tiles, case):
    _check_golden(case)


def _check_golden(case):
    inputs = [case[name].to(DEVICE).requires_grad_(True) for name in ('q', 'k', 'v', 'rpb')]
    out = triton_na.na2d_triton(*inputs[:3], case['kernel_size'], case['dilation'], inputs[3],
                                case['scale'], 0.0)
    grads = torch.autograd.grad(out, inputs, case['grad_out'].to(DEVICE))
    assert out.dtype == torch.float64
    expected = [case[name] for name in ('out', 'dq', 'dk', 'dv', 'drpb')]
    _assert_all_close([out, *grads], expected, atol=1e-5, rtol=1e-4, rpb_atol=1e-4)


def test_autocast_runs_in_the_input_dtype():
    """Under autocast (bf16), q/k/v from an autocast matmul are bf16 while
    the rpb parameter stays float32; the rpb gradient comes back float32."""
    qkv, rpb, grad_out = _inputs(1, 1, 7, 8, 16, 3)
    weight = torch.eye(16, device=DEVICE, requires_grad=True)
    rpb = rpb.float().to(DEVICE).requires_grad_(True)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        q, k, v = (qkv.float().to(DEVICE)[..., i, :, :] @ weight for i in range(3))
        q, k, v = (t.permute(0, 3, 1, 2, 4) for t in (q, k, v))
        out = triton_na.na2d_triton(q, k, v, 3, 1, rpb, 0.25, 0.0)
    assert out.dtype == torch.bfloat16
    drpb, dw = torch.autograd.grad(out, [rpb, weight], grad_out.to(DEVICE, torch.bfloat16))
    assert drpb.dtype == torch.float32 and dw.dtype == torch.float32
    expected = na2d_reference(q.double(), k.double(), v.double(), 3, 1, rpb.double(), 0.25)
    torch.testing.assert_close(out.double(), expected, atol=3e-2, rtol=3e-2)


def _holders(height, width, kernel, dilation, key_y, key_x):
    """(H, W) bool: the queries whose window holds key (key_y, key_x)."""
    rows = torch.tensor([key_y in window_1d(y, height, kernel, dilation)[0]
                         for y in range(height)])
    cols = torch.tensor([key_x in window_1d(x, width, kernel, dilation)[0]
                         for x in range(width)])
    return rows[:, None] & cols[None, :]


@pytest.mark.filterwarnings('ignore:invalid value:RuntimeWarning')   # the interpreter's numpy
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_key_reaches_only_the_windows_that_hold_it(tiles, bad):
    """A NaN/inf key inside a tile of queries reaches only the outputs of the
    queries whose windows hold it (NaN where the reference has NaN), and
    every other output equals the reference."""
    height = width = 12
    qkv, rpb, _ = _inputs(1, 1, height, width, 16, 3)
    q, k, v = (t.float().to(DEVICE) for t in qkv.permute(3, 0, 4, 1, 2, 5).unbind(0))
    k = k.clone()
    k[0, 0, 3, 4, 5] = bad
    out = triton_na.na2d_triton(q, k, v, 3, 1, rpb.float().to(DEVICE), 0.25, 0.0)[0, 0].cpu()
    expected = na2d_reference(q, k, v, 3, 1, rpb.float().to(DEVICE), 0.25)[0, 0].cpu()
    holders = _holders(height, width, 3, 1, 3, 4)
    assert holders.sum() == 9
    assert torch.equal(out.isnan(), expected.isnan())
    assert not out[~holders].isnan().any()
    if bad != bad:
        assert out[holders].isnan().all()
    torch.testing.assert_close(out[~holders], expected[~holders])


def test_rpb_gradient_is_deterministic():
    qkv, rpb, grad_out = _inputs(1, 2, 11, 13, 16, 5)
    first = _run(triton_na.na2d_triton, qkv, rpb, grad_out, 5, 1, torch.float32)
    second = _run(triton_na.na2d_triton, qkv, rpb, grad_out, 5, 1, torch.float32)
    assert torch.equal(first[4], second[4])
    assert first[4].abs().sum() > 0


def test_launches_per_call_do_not_depend_on_the_map():
    """One forward launch and two backward launches, whatever the map."""
    counts = []
    for height, width in [(5, 5), (20, 9)]:
        qkv, rpb, grad_out = _inputs(1, 1, height, width, 16, 3)
        q, k, v = (t.float().to(DEVICE).requires_grad_(True)
                   for t in qkv.permute(3, 0, 4, 1, 2, 5).unbind(0))
        start = triton_na.launch_count()
        out = triton_na.na2d_triton(q, k, v, 3, 1, rpb.float().to(DEVICE), 0.25, 0.0)
        forward = triton_na.launch_count() - start
        out.backward(grad_out.float().to(DEVICE))
        counts.append((forward, triton_na.launch_count() - start - forward))
    assert counts == [(1, 2), (1, 2)]


def test_is_available_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    assert not triton_na.is_available('cpu')
    assert not triton_na.is_available('meta')


@pytest.fixture
def gpu_tiles(monkeypatch):
    """Exactly the GPU's launch plan (through the interpreter when there is
    no GPU)."""
    monkeypatch.setenv(triton_na.TILES_ENV, 'gpu')


# (B, heads, H, W, head_dim, K, dilation, rpb) under the GPU's tiles (8x8 for
# K <= 7, 8x4 above; 16-key halo rows): every K, dilation 1..4, maps of
# exactly K*d and K*d + 1, sizes that are not multiples of 8 or 4, several
# tiles per axis, dK/dV key tiles whose queries span two 16-column chunks
# (K13, W 27), head_dim 16/32/64/128 (and 24, padded), with and without rpb.
GPU_TILE_CASES = [
    (2, 1, 3, 4, 16, 3, 1, True),
    (1, 2, 12, 13, 32, 3, 4, False),
    (1, 1, 10, 11, 24, 5, 2, True),
    (1, 1, 17, 13, 32, 7, 1, True),
    (1, 1, 7, 8, 64, 7, 1, False),
    (1, 1, 21, 22, 16, 7, 3, True),
    (1, 1, 9, 10, 128, 9, 1, True),
    (1, 1, 22, 23, 16, 11, 2, False),
    (1, 1, 13, 27, 16, 13, 1, True),
    (1, 1, 14, 13, 32, 13, 1, True),
]


@pytest.mark.slow
@pytest.mark.parametrize('batch,heads,height,width,head_dim,kernel,dilation,with_rpb',
                         GPU_TILE_CASES)
def test_gpu_tiles_match_reference(gpu_tiles, batch, heads, height, width, head_dim, kernel,
                                   dilation, with_rpb):
    qkv, rpb, grad_out = _inputs(batch, heads, height, width, head_dim, kernel, with_rpb)
    got = _run(triton_na.na2d_triton, qkv, rpb, grad_out, kernel, dilation, torch.float32)
    expected = _run(na2d_reference, qkv, rpb, grad_out, kernel, dilation, torch.float64)
    _assert_all_close(got, expected, atol=1e-5, rtol=1e-4)


def test_gpu_tiles_env_gives_the_gpu_plan(gpu_tiles):
    """Everything but the upcast of bf16 dots (the interpreter's bf16 tl.dot)."""
    shape = (2, 3, 20, 19, 128)
    for kernel, dtype in [(7, torch.float32), (13, torch.bfloat16), (7, torch.float16)]:
        under_env = vars(triton_na.LaunchPlan(shape, dtype, kernel, 2))
        gpu = vars(triton_na.LaunchPlan(shape, dtype, kernel, 2, gpu=True))
        assert under_env.pop('upcast') == gpu.pop('upcast') or dtype == torch.bfloat16
        assert under_env == gpu
        assert (gpu['ty'], gpu['tx']) == triton_na.gpu_tile(kernel)


def test_bad_tiles_env_is_named(monkeypatch):
    monkeypatch.setenv(triton_na.TILES_ENV, 'GPU ')
    q = torch.randn(1, 1, 5, 5, 16, device=DEVICE)
    with pytest.raises(ValueError, match='NAT_MM_TRITON_TILES=.*set it to "gpu"'):
        triton_na.na2d_triton(q, q, q, 3, 1, None, 0.25, 0.0)


def test_maps_past_the_grid_limit_are_folded(monkeypatch):
    """More maps (B * heads) than a grid axis takes: the maps spread over grid
    axes 1 and 2, the programs past the last map return at once."""
    monkeypatch.setattr(triton_na, 'MAX_GRID_YZ', 2)
    qkv, rpb, grad_out = _inputs(5, 1, 6, 7, 16, 3)
    plan = triton_na.LaunchPlan((5, 1, 6, 7, 16), torch.float32, 3, 1)
    assert plan.grid[1:] == (2, 3)
    got = _run(triton_na.na2d_triton, qkv, rpb, grad_out, 3, 1, torch.float32)
    expected = _run(na2d_reference, qkv, rpb, grad_out, 3, 1, torch.float64)
    _assert_all_close(got, expected, atol=1e-5, rtol=1e-4)


def test_slices_past_int32_offsets_are_refused():
    triton_na._check_slices(torch.empty(1, 1, 2 ** 15, 2 ** 15, 2, device='meta'))
    with pytest.raises(ValueError, match=r'int32 offsets \(< 2\*\*31\)'):
        triton_na._check_slices(torch.empty(1, 1, 2 ** 15, 2 ** 15 + 1, 2, device='meta'))


def test_dropout_in_kernel_matches_dense_attention_with_its_mask(tiles):
    """With values = one-hot key indices the output is the dropped weight
    matrix, which reveals the kernel's keep mask; the forward and every
    gradient (regenerated mask) then equal dense attention with that mask.
    Under the GPU's tiles a 9x9 map spans four tiles."""
    kernel, p = 3, 0.3
    batch, heads, size = (2, 1, 9) if tiles == 'gpu' else (2, 2, 4)
    qkv, rpb, grad_out = _inputs(batch, heads, size, size, size * size, kernel)
    q, k, v = (t.float() for t in qkv.permute(3, 0, 4, 1, 2, 5).unbind(0))
    rpb = rpb.float()
    one_hot = torch.eye(size * size).view(1, 1, size, size, size * size)
    one_hot = one_hot.expand(batch, heads, -1, -1, -1)
    torch.manual_seed(7)
    dropped = triton_na.na2d_triton(q.to(DEVICE), k.to(DEVICE), one_hot.to(DEVICE), kernel, 1,
                                    rpb.to(DEVICE), 0.25, p).cpu()
    weights = na2d_reference(q, k, one_hot, kernel, 1, rpb, 0.25)
    window = weights > 0
    keep = dropped * (1 - p) / weights.where(window, torch.ones(()))
    assert not dropped[~window].any()
    assert ((keep[window] - 1).abs() < 1e-4).logical_or(keep[window].abs() < 1e-4).all()
    kept = (keep[window] > 0.5).float().mean().item()
    assert abs(kept - (1 - p)) < 0.1
    mask = (keep > 0.5) / (1 - p)

    def dense(q, k, v, kernel, dilation, rpb, scale, dropout_p):
        weights = na2d_reference(q, k, one_hot.double(), kernel, dilation, rpb, scale)
        return torch.einsum('bhyxj,bhjd->bhyxd', weights * mask.double(), v.flatten(2, 3))

    torch.manual_seed(7)
    got = _run(triton_na.na2d_triton, qkv, rpb, grad_out, kernel, 1, torch.float32, scale=0.25,
               dropout_p=p)
    expected = _run(dense, qkv, rpb, grad_out, kernel, 1, torch.float64, scale=0.25)
    _assert_all_close(got, expected, atol=1e-5, rtol=1e-4)


def test_registered_in_the_seam():
    assert 'triton' in available_backends(DEVICE)
    assert functional.DEFAULT_ORDER['cuda'][0] == 'triton'


def test_bad_input_gives_the_seam_errors():
    for args, kwargs, message in bad_na2d_calls(head_dim=16, device=DEVICE):
        with pytest.raises(ValueError) as error:
            na2d(*args, **kwargs, backend='triton')
        assert str(error.value) == message


def test_na2d_backend_triton_matches_reference():
    qkv, rpb, grad_out = _inputs(1, 2, 8, 9, 16, 3)
    got = _run(functools.partial(na2d, backend='triton'), qkv, rpb, grad_out, 3, 1,
               torch.float32)
    expected = _run(na2d_reference, qkv, rpb, grad_out, 3, 1, torch.float64)
    _assert_all_close(got, expected, atol=1e-5, rtol=1e-4)
