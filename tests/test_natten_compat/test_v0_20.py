"""NATTEN 0.20+'s API on nat_mm against nat_mm's gather reference (no rpb in 0.20) and its
module (bad input: test_arguments.py)."""
import pytest
import torch

from nat_mm.natten_compat import v0_20
from nat_mm.ops import na2d_reference

# (B, heads, H, W, D, kernel_size as passed, dilation as passed, scale)
CASES = {
    'K7 int': (2, 2, 9, 11, 8, 7, 1, None),
    'K3 pair d2 pair': (1, 3, 8, 7, 4, (3, 3), (2, 2), None),
    'K5 d3 scale': (1, 2, 15, 16, 4, 5, 3, 0.3),
}


def _inputs(batch, heads, height, width, head_dim, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, height, width, heads, head_dim, generator=gen,
                        dtype=torch.float64).requires_grad_(True) for _ in range(3)]


def _single(value):
    return value[0] if isinstance(value, tuple) else value


@pytest.mark.parametrize('case', CASES)
def test_na2d_equals_reference_without_rpb(case):
    """Heads-last in and out; outputs and gradients to 1e-9 in float64."""
    batch, heads, height, width, head_dim, kernel, dilation, scale = CASES[case]
    q, k, v = _inputs(batch, heads, height, width, head_dim)
    grad_out = torch.randn(batch, height, width, heads, head_dim, dtype=torch.float64)
    out = v0_20.na2d(q, k, v, kernel, dilation=dilation, scale=scale)
    assert out.shape == q.shape and out.is_contiguous()
    got = (out, *torch.autograd.grad(out, (q, k, v), grad_out))
    heads_first = [t.detach().permute(0, 3, 1, 2, 4).requires_grad_(True) for t in (q, k, v)]
    expected = na2d_reference(*heads_first, _single(kernel), _single(dilation), None, scale)
    expected = (expected, *torch.autograd.grad(expected, heads_first,
                                               grad_out.permute(0, 3, 1, 2, 4)))
    for name, a, b in zip(('out', 'dq', 'dk', 'dv'), got, expected):
        torch.testing.assert_close(a, b.permute(0, 2, 3, 1, 4), rtol=1e-9, atol=1e-12, msg=name)


def test_kernel_choices_do_not_change_the_result():
    """NATTEN's backend / tile / compile options pick its kernels: accepted, same numbers."""
    q, k, v = _inputs(1, 2, 8, 8, 4)
    plain = v0_20.na2d(q, k, v, 3)
    tuned = v0_20.na2d(q, k, v, 3, 1, 1, False, None, backend='cutlass-fna',
                       q_tile_shape=(8, 8), kv_tile_shape=(8, 8), torch_compile=False)
    torch.testing.assert_close(tuned, plain, rtol=0, atol=0)


def test_module_has_natten_0_20_names_and_computes_na():
    """qkv and proj only (no rpb); output = proj(na(qkv(x))) computed here with the reference."""
    torch.manual_seed(0)
    attn = v0_20.NeighborhoodAttention2D(embed_dim=12, num_heads=3, kernel_size=(5, 5),
                                         stride=1, dilation=(2, 2), is_causal=False).double()
    assert sorted(attn.state_dict()) == ['proj.bias', 'proj.weight', 'qkv.bias', 'qkv.weight']
    x = torch.randn(2, 10, 11, 12, dtype=torch.float64)
    with torch.no_grad():
        y = attn.eval()(x)
        q, k, v = attn.qkv(x).view(2, 10, 11, 3, 3, 4).permute(3, 0, 4, 1, 2, 5)
        expected = attn.proj(na2d_reference(q, k, v, 5, 2).permute(0, 2, 3, 1, 4).flatten(3))
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-12)
