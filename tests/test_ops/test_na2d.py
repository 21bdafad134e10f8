"""Both fast neighbourhood attention paths (CSR: CPU; halo: other devices,
run here on CPU) and the public API against independent references."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from nat_mm import NeighborhoodAttention2D, na2d, na2d_reference
from nat_mm.ops import csr, functional, halo

SHAPES = [(7, 7), (8, 15), (13, 9), (33, 47), (64, 64)]
KERNELS = [3, 5, 7, 9, 13]


def _via(fast_path):
    """``na2d``'s signature, computed by ``fast_path`` whatever the device."""
    def run(query, key, value, kernel_size, dilation=1, rpb=None, scale=None, dropout_p=0.0):
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        return fast_path(query, key, value, kernel_size, dilation, rpb, scale, dropout_p)
    return run


@pytest.fixture(params=['csr', 'halo'])
def fast_na2d(request):
    return _via({'csr': csr.na2d_csr, 'halo': halo.na2d_halo}[request.param])


def _valid_cases():
    for (height, width), kernel, dilation in itertools.product(SHAPES, KERNELS, range(1, 5)):
        if min(height, width) >= kernel * dilation:
            yield height, width, kernel, dilation


def _qkv(batch, heads, height, width, head_dim, dtype=torch.float32, seed=0):
    """Non-contiguous q, k, v cut from one projection, as the module makes them."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, height, width, 3, heads, head_dim, generator=gen, dtype=dtype)
    qkv.requires_grad_(True)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    return qkv, q, k, v


def _rpb(heads, kernel, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen,
                       dtype=dtype).requires_grad_(True)


def _outputs_and_grads(fn, qkv, kernel, dilation, rpb, grad_out, dtype=torch.float32):
    """Output and gradients of ``fn`` on the q, k, v cut from ``qkv``, in ``dtype``."""
    qkv = qkv.detach().to(dtype).requires_grad_(True)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    inputs = [qkv]
    if rpb is not None:
        rpb = rpb.detach().to(dtype).requires_grad_(True)
        inputs.append(rpb)
    out = fn(q, k, v, kernel, dilation, rpb)
    return (out, *torch.autograd.grad(out, inputs, grad_out.to(dtype)))


def assert_matches_reference(fast_na2d, qkv, kernel, dilation, rpb, grad_out):
    """``fast_na2d`` in float32 against the gather reference in float64.

    Outputs and q/k/v gradients: atol 1e-5, rtol 1e-4. The rpb gradient sums
    dlogits over all B * H * W queries, so its float32 round-off grows with
    the map (about 1e-5 at 64x64 where terms cancel); it gets atol 1e-4.
    """
    fast = _outputs_and_grads(fast_na2d, qkv, kernel, dilation, rpb, grad_out)
    slow = _outputs_and_grads(na2d_reference, qkv, kernel, dilation, rpb, grad_out,
                              dtype=torch.float64)
    for i, (got, expected) in enumerate(zip(fast, slow)):
        atol = 1e-4 if i == 2 else 1e-5
        torch.testing.assert_close(got, expected.float(), atol=atol, rtol=1e-4)


@pytest.mark.parametrize('with_rpb', [True, False], ids=['rpb', 'no_rpb'])
@pytest.mark.parametrize('height,width,kernel,dilation', list(_valid_cases()))
def test_fast_path_matches_reference(fast_na2d, height, width, kernel, dilation, with_rpb):
    qkv, q, _, _ = _qkv(2, 2, height, width, 8)
    assert not q.is_contiguous()
    rpb = _rpb(2, kernel) if with_rpb else None
    grad_out = torch.randn(2, 2, height, width, 8)
    assert_matches_reference(fast_na2d, qkv, kernel, dilation, rpb, grad_out)


@pytest.mark.parametrize('with_rpb', [True, False], ids=['rpb', 'no_rpb'])
@pytest.mark.parametrize('height,width,kernel,dilation', [(33, 47, 7, 1), (30, 26, 5, 3)])
def test_halo_chunked_attention_matches_reference(monkeypatch, height, width, kernel,
                                                   dilation, with_rpb):
    """Force one chunk per row of tiles (9 here), so that rows of the same
    border type are split over several chunks, through the forward and the
    backward."""
    monkeypatch.setattr(halo, 'CHUNK_FLOATS', 2 ** 14)
    used_chunks = []
    build_plan = halo.grid_plan

    def spy(*args, **kwargs):
        plan = build_plan(*args, **kwargs)
        used_chunks.append(plan.chunks)
        return plan

    monkeypatch.setattr(halo, 'grid_plan', spy)
    qkv, _, _, _ = _qkv(2, 2, height, width, 8)
    rpb = _rpb(2, kernel) if with_rpb else None
    grad_out = torch.randn(2, 2, height, width, 8)
    assert_matches_reference(_via(halo.na2d_halo), qkv, kernel, dilation, rpb, grad_out)
    assert min(len(chunks) for chunks in used_chunks) == 9
    for chunks in used_chunks:
        row_types = [chunk.row_type for chunk in chunks]
        assert 1 < len(set(row_types)) < len(row_types)


def test_na2d_on_cpu_runs_the_csr_path(monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args[0].shape)
        return csr.na2d_csr(*args)

    monkeypatch.setattr(functional, 'na2d_csr', spy)
    _, q, k, v = _qkv(1, 2, 9, 9, 8)
    na2d(q, k, v, 3)
    assert calls == [q.shape]


@pytest.mark.parametrize('kernel,dilation', [(3, 1), (5, 2)])
def test_csr_transposed_pattern_is_the_transpose(kernel, dilation):
    plan = csr.csr_plan(2, 3, 11, 13, kernel, dilation)
    n = 2 * 3 * 11 * 13
    values = torch.arange(1., len(plan.col) + 1, dtype=torch.float64)

    def dense(crow, col, vals):
        return torch.sparse_csr_tensor(crow.long(), col.long(), vals, size=(n, n)).to_dense()

    pattern = dense(plan.crow, plan.col, values)
    assert ((pattern > 0).sum(1) == kernel * kernel).all()
    torch.testing.assert_close(dense(plan.t_crow, plan.t_col, values[plan.t_perm]), pattern.T,
                               rtol=0, atol=0)


@pytest.mark.parametrize('kernel,dilation,height,width', [(3, 1, 5, 6), (3, 2, 7, 9)])
def test_gradcheck_float64(fast_na2d, kernel, dilation, height, width):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, height, width, 4, generator=gen, dtype=torch.float64,
                           requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 2 * kernel - 1, 2 * kernel - 1, generator=gen, dtype=torch.float64,
                      requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *args: fast_na2d(*args[:3], kernel, dilation, rpb=args[3]), (q, k, v, rpb),
        fast_mode=True)


def test_attention_dropout_drops_and_rescales_the_reference_weights(fast_na2d):
    """With v = identity over positions the output row of a query is its
    attention weights: each is dropped (0) or kept and scaled by 1 / (1 - p)."""
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 2, 5, 5, 25, generator=gen) for _ in range(2))
    v = torch.eye(25).view(1, 1, 5, 5, 25).expand(2, 2, -1, -1, -1)
    weights = na2d_reference(q, k, v, 3)
    dropped = fast_na2d(q, k, v, 3, dropout_p=0.5)
    in_window = weights > 0
    kept = dropped[in_window] != 0
    assert (dropped[~in_window] == 0).all()
    torch.testing.assert_close(dropped[in_window][kept], 2 * weights[in_window][kept])
    assert 0.3 < kept.float().mean() < 0.7
    with torch.no_grad():    # dropout is a training-time regulariser
        torch.testing.assert_close(fast_na2d(q, k, v, 3, dropout_p=0.5), weights)


def test_attention_dropout_backward_uses_the_forward_mask(fast_na2d):
    """Under a fixed seed the dropped attention is a fixed function: gradcheck."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 7, 4, generator=gen, dtype=torch.float64,
                           requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)

    def dropped(*args):
        torch.manual_seed(0)
        return fast_na2d(*args[:3], 3, 1, rpb=args[3], dropout_p=0.3)

    assert torch.autograd.gradcheck(dropped, (q, k, v, rpb), fast_mode=True)


@pytest.mark.parametrize('kernel', [3, 5, 7])
def test_window_covering_the_map_is_full_attention_with_relative_bias(fast_na2d, kernel):
    """d = 1 and K = H = W: every query sees the whole map."""
    _, q, k, v = _qkv(2, 3, kernel, kernel, 8)
    rpb = _rpb(3, kernel)
    scale = 8 ** -0.5
    pos = torch.arange(kernel)
    ys, xs = torch.meshgrid(pos, pos, indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = (kernel - 1) + ys[None, :] - ys[:, None]        # key - query
    dx = (kernel - 1) + xs[None, :] - xs[:, None]
    logits = (q.flatten(2, 3) * scale) @ k.flatten(2, 3).transpose(-1, -2) + rpb[:, dy, dx]
    expected = (logits.softmax(-1) @ v.flatten(2, 3)).view_as(q)
    torch.testing.assert_close(fast_na2d(q, k, v, kernel, rpb=rpb), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('kernel,dilation', [(3, 2), (3, 3), (5, 2)])
def test_dilation_is_na_on_each_subgrid(fast_na2d, kernel, dilation):
    side = kernel * dilation
    _, q, k, v = _qkv(1, 2, side, side + dilation, 8)
    rpb = _rpb(2, kernel)
    out = fast_na2d(q, k, v, kernel, dilation, rpb)
    for gy, gx in itertools.product(range(dilation), repeat=2):
        sub = [t[:, :, gy::dilation, gx::dilation] for t in (q, k, v)]
        torch.testing.assert_close(out[:, :, gy::dilation, gx::dilation],
                                   fast_na2d(*sub, kernel, 1, rpb), atol=1e-5, rtol=1e-4)


def test_borders_use_shifted_windows(fast_na2d):
    """A corner query sees the K x K block in the corner, not a zero-padded window."""
    kernel = 3
    q = torch.zeros(1, 1, 6, 6, 4)
    k = torch.zeros(1, 1, 6, 6, 4)
    v = torch.arange(36.).view(1, 1, 6, 6, 1).expand(1, 1, 6, 6, 4).contiguous()
    out = fast_na2d(q, k, v, kernel)      # uniform weights: output = mean of the window
    assert out[0, 0, 0, 0, 0].item() == pytest.approx(v[0, 0, :3, :3, 0].mean().item())
    assert out[0, 0, 5, 2, 0].item() == pytest.approx(v[0, 0, 3:6, 1:4, 0].mean().item())
    assert out[0, 0, 2, 2, 0].item() == pytest.approx(v[0, 0, 1:4, 1:4, 0].mean().item())


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


def test_fast_path_does_not_materialise_kernel_squared_copies(fast_na2d):
    """The legacy design holds K*K = 49 copies of K; the fast paths stay far below."""
    _, q, k, v = _qkv(1, 2, 64, 64, 32)
    rpb = _rpb(2, 7)
    with _LargestTensor() as fast:
        fast_na2d(q, k, v, 7, 1, rpb).sum().backward()
    with _LargestTensor() as slow:
        na2d_reference(q, k, v, 7, 1, rpb).sum().backward()
    assert slow.largest >= 49 * k.numel()
    assert fast.largest < 49 * k.numel() / 2


@pytest.mark.parametrize('height,width', [(1, 1), (3, 5), (6, 13)])
def test_module_pads_small_inputs_like_natten_0_14(height, width):
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(16, 2, kernel_size=7).eval()
    x = torch.randn(2, height, width, 16)
    # By hand: zero-pad the input to 7 along short axes, qkv, attend, crop, proj.
    padded = torch.zeros(2, max(height, 7), max(width, 7), 16)
    padded[:, :height, :width] = x
    qkv = attn.qkv(padded).view(*padded.shape[:3], 3, 2, 8).permute(3, 0, 4, 1, 2, 5)
    attended = na2d_reference(qkv[0], qkv[1], qkv[2], 7, 1, attn.rpb)
    attended = attended.permute(0, 2, 3, 1, 4).flatten(3)[:, :height, :width]
    torch.testing.assert_close(attn(x), attn.proj(attended), atol=1e-5, rtol=1e-4)


def test_module_matches_reference_composition_with_gradients():
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(32, 4, kernel_size=5, dilation=2)
    x = torch.randn(2, 17, 23, 32, requires_grad=True)
    out = attn(x)
    qkv = attn.qkv(x).view(2, 17, 23, 3, 4, 8).permute(3, 0, 4, 1, 2, 5)
    ref = na2d_reference(qkv[0], qkv[1], qkv[2], 5, 2, attn.rpb)
    ref = attn.proj(ref.permute(0, 2, 3, 1, 4).flatten(3))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    grads = torch.autograd.grad(out.square().sum(), [x, attn.rpb, attn.qkv.weight])
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, attn.rpb, attn.qkv.weight])
    for got, expected in zip(grads, ref_grads):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_frozen_rpb_and_no_grad_paths_match_reference(fast_na2d):
    _, q, k, v = _qkv(2, 2, 12, 10, 8)
    rpb = _rpb(2, 5).detach()
    expected = na2d_reference(q, k, v, 5, 1, rpb)
    torch.testing.assert_close(fast_na2d(q, k, v, 5, 1, rpb), expected, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(fast_na2d(q, k, v, 5, 1, rpb), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('with_rpb_grad', [True, False])
def test_bfloat16_matches_float32_reference(fast_na2d, with_rpb_grad):
    _, q, k, v = _qkv(1, 2, 20, 24, 16)
    rpb = _rpb(2, 7).requires_grad_(with_rpb_grad)
    expected = na2d_reference(q, k, v, 7, 1, rpb)
    got = fast_na2d(q.bfloat16(), k.bfloat16(), v.bfloat16(), 7, 1, rpb)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=3e-2, rtol=3e-2)


def test_module_under_cpu_autocast_bfloat16_has_gradients():
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(32, 2)
    x = torch.randn(1, 14, 15, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attn(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), attn(x), atol=5e-2, rtol=5e-2)
    out.float().sum().backward()
    assert attn.rpb.grad is not None and torch.isfinite(attn.rpb.grad).all()
    assert attn.rpb.grad.abs().sum() > 0


def test_module_runs_under_torch_compile_with_gradients():
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(16, 2, kernel_size=3, dilation=2)
    x = torch.randn(1, 9, 11, 16, requires_grad=True)
    compiled = torch.compile(attn, fullgraph=False, dynamic=False)
    results = []
    for module in (compiled, attn):
        out = module(x)
        results.append((out, *torch.autograd.grad(out.square().sum(), [x, attn.rpb])))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('kwargs,message', [
    (dict(kernel_size=4), 'odd'), (dict(kernel_size=1), 'odd'), (dict(dilation=0), 'dilation'),
    (dict(dim=30, num_heads=4), 'divisible'),
])
def test_module_rejects_bad_configuration(kwargs, message):
    args = dict(dim=32, num_heads=4) | kwargs
    with pytest.raises(ValueError, match=message):
        NeighborhoodAttention2D(**args)


def test_module_rejects_bad_input():
    attn = NeighborhoodAttention2D(32, 4)
    with pytest.raises(ValueError, match=r'\(B, H, W, C\)'):
        attn(torch.randn(2, 32, 8))
    with pytest.raises(ValueError, match='16 channels, expected 32'):
        attn(torch.randn(1, 8, 8, 16))


def test_na2d_rejects_bad_input():
    q = torch.randn(1, 2, 9, 9, 8)
    with pytest.raises(ValueError, match='5 dims'):
        na2d(q[0], q[0], q[0], 3)
    with pytest.raises(ValueError, match='shapes disagree'):
        na2d(q, q[:, :, :8], q, 3)
    with pytest.raises(ValueError, match='dtypes disagree'):
        na2d(q, q.double(), q, 3)
    with pytest.raises(ValueError, match='odd int'):
        na2d(q, q, q, 4)
    with pytest.raises(ValueError, match='dilation'):
        na2d(q, q, q, 3, dilation=0)
    with pytest.raises(ValueError, match=r'rpb must have shape \(heads, 2K-1, 2K-1\) = \(2, 5, 5\)'):
        na2d(q, q, q, 3, rpb=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match='smaller than kernel_size \\* dilation.*NeighborhoodAttention2D'):
        na2d(q, q, q, 5, dilation=2)
