"""The FlexAttention backend (nat_mm/ops/flex.py): its mask and score functions against the
window rule of the reference, its block mask against FlexAttention's own, its forward on the
CPU (compiled, inference) against NATTEN 0.17.5's numbers and the reference, its errors; its
backward where a GPU is present.

On the CPU a compiled graph serves every map size, kernel size, dilation and scale of one
signature (head_dim, dtype, heads, batch 1 or more, one block or more; see flex.py); the cases
here use few signatures, since each compiles once (seconds)."""
import functools

import pytest
import torch

from na_testing import load_golden, make_qkv, make_rpb
from nat_mm.ops import na2d, na2d_reference, na_backend
from nat_mm.ops import backends, flex
from nat_mm.ops.reference import window_1d

pytestmark = pytest.mark.skipif(not flex.is_available('cpu'),
                                reason=f"no 'flex' backend here: {flex.unavailable_reason('cpu')}")
flex_na2d = functools.partial(na2d, backend='flex')

# (height, width, kernel, dilation): borders on both axes, every dilation group, maps of
# exactly K * d, non-square maps.
SMALL_MAPS = [(7, 9, 3, 1), (9, 8, 3, 2), (12, 13, 5, 2), (13, 12, 3, 4), (7, 7, 7, 1),
              (15, 16, 5, 3), (11, 12, 11, 1)]


def _reference_pairs(height, width, kernel, dilation):
    """(HW, HW) bool: key in the query's window, and (HW, HW, 2) long: its rpb indices
    (-1 outside the window), both by the reference's window rule."""
    length = height * width
    inside = torch.zeros(length, length, dtype=torch.bool)
    bias = torch.full((length, length, 2), -1, dtype=torch.long)
    for y in range(height):
        keys_y, bias_y = window_1d(y, height, kernel, dilation)
        for x in range(width):
            keys_x, bias_x = window_1d(x, width, kernel, dilation)
            for ky, by in zip(keys_y, bias_y):
                for kx, bx in zip(keys_x, bias_x):
                    inside[y * width + x, ky * width + kx] = True
                    bias[y * width + x, ky * width + kx] = torch.tensor([by, bx])
    return inside, bias


def _all_pairs(height, width):
    length = height * width
    return torch.arange(length)[:, None], torch.arange(length)[None, :]


@pytest.mark.parametrize('height,width,kernel,dilation', SMALL_MAPS)
def test_mask_mod_is_the_window_rule_for_every_pair(height, width, kernel, dilation):
    geometry = torch.tensor([height, width, kernel, dilation])
    inside, _ = _reference_pairs(height, width, kernel, dilation)
    got = flex.mask_mod_for(geometry)(0, 0, *_all_pairs(height, width))
    assert torch.equal(got, inside)
    assert (got.sum(-1) == kernel * kernel).all()


@pytest.mark.parametrize('height,width,kernel,dilation', SMALL_MAPS)
def test_score_mod_adds_the_pairs_rpb_entry_and_stays_in_the_table(
        height, width, kernel, dilation):
    """Inside a window: scale * score + rpb[h, row, col] at the reference's indices; outside
    (pairs FlexAttention scores and masks later): some entry of the table, never outside."""
    geometry = torch.tensor([height, width, kernel, dilation])
    heads, side = 2, 2 * kernel - 1
    rpb = torch.arange(heads * side * side, dtype=torch.float32).view(heads, side, side)
    inside, bias = _reference_pairs(height, width, kernel, dilation)
    query, key = _all_pairs(height, width)
    score = torch.full(inside.shape, 3.0)
    score_mod = flex.score_mod_for(geometry, rpb, torch.tensor(0.5))
    for head in range(heads):
        got = score_mod(score, 0, head, query, key)
        expected = 1.5 + rpb[head, bias[..., 0].clamp(min=0), bias[..., 1].clamp(min=0)]
        assert torch.equal(got[inside], expected[inside])
        entry = got - 1.5 - head * side * side
        assert ((entry >= 0) & (entry < side * side)).all()


@pytest.mark.parametrize('height,width,kernel,dilation', [(40, 41, 7, 3), (16, 19, 7, 1),
                                                          (30, 30, 13, 2)])
def test_block_mask_equals_flex_attentions_own(height, width, kernel, dilation):
    """The block mask built from the windows' key indices marks exactly the blocks that
    FlexAttention's create_block_mask finds by evaluating mask_mod on every pair."""
    from torch.nn.attention.flex_attention import create_block_mask
    mask, geometry = flex.block_mask(height, width, kernel, dilation, torch.device('cpu'))
    length = height * width
    expected = create_block_mask(flex.mask_mod_for(geometry), None, None, length, length,
                                 device='cpu', BLOCK_SIZE=flex.BLOCK)
    assert torch.equal(mask.to_dense(), expected.to_dense())
    assert mask.to_dense().sum() < mask.to_dense().numel()


def _golden_id(case):
    return f"K{case['kernel_size']}d{case['dilation']}_{case['q'].shape[2]}x{case['q'].shape[3]}"


def _golden_cases():
    """Every golden case; those whose (heads, batch) need a compiled graph of their own are
    marked slow (the others share two graphs: one-block and larger maps)."""
    for case in load_golden()['cases']:
        batch, heads = case['q'].shape[:2]
        marks = [pytest.mark.slow] if (batch, heads) != (1, 2) else []
        yield pytest.param(case, marks=marks, id=_golden_id(case))


@pytest.mark.parametrize('case', _golden_cases())
def test_forward_matches_natten_golden(case):
    """NATTEN 0.17.5's float64 outputs; float64 inputs run in float32 here."""
    with torch.no_grad():
        out = flex_na2d(case['q'], case['k'], case['v'], case['kernel_size'],
                        case['dilation'], case['rpb'], case['scale'])
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, case['out'], atol=1e-5, rtol=1e-5)


# (batch, heads, height, width, head_dim, kernel, dilation, rpb): dilations 1-4, K 3-13, maps
# of exactly K * d, one without rpb; batch 1, 2 heads and head_dim 4 as most golden cases
# (one compiled graph serves them all), and NAT's head_dim 32 with a batch of 2.
REFERENCE_CASES = [
    (1, 2, 11, 13, 4, 3, 1, True), (1, 2, 12, 13, 4, 3, 4, True),
    (1, 2, 15, 16, 4, 5, 3, True), (1, 2, 14, 17, 4, 7, 2, True),
    (1, 2, 29, 30, 4, 7, 4, False), (1, 2, 12, 12, 4, 9, 1, True),
    (1, 2, 22, 23, 4, 11, 2, True), (1, 2, 13, 14, 4, 13, 1, True),
    pytest.param(2, 2, 16, 17, 32, 7, 1, True, marks=pytest.mark.slow),   # a graph of its own
]


@pytest.mark.parametrize('batch,heads,height,width,head_dim,kernel,dilation,with_rpb',
                         REFERENCE_CASES)
def test_forward_matches_reference(batch, heads, height, width, head_dim, kernel, dilation,
                                   with_rpb):
    """q, k, v as strided views of one projection requiring grad (as the module passes
    them): the CPU forward runs, the output equals the reference's."""
    _, q, k, v = make_qkv(batch, heads, height, width, head_dim)
    rpb = make_rpb(heads, kernel) if with_rpb else None
    scale = 0.3
    out = flex_na2d(q, k, v, kernel, dilation, rpb, scale)
    expected = na2d_reference(q.double(), k.double(), v.double(), kernel, dilation,
                              None if rpb is None else rpb.double(), scale)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_backward_on_cpu_is_one_clear_error():
    _, q, k, v = make_qkv(1, 2, 9, 9, 4)
    out = flex_na2d(q, k, v, 3, 1, make_rpb(2, 3))
    with pytest.raises(RuntimeError, match="'flex' backend has no backward on the CPU.*"
                                           "backend='csr'"):
        out.sum().backward()


def test_dropout_is_refused_and_passed_over_by_a_default_choice(monkeypatch):
    _, q, k, v = make_qkv(1, 2, 9, 9, 4)
    with pytest.raises(ValueError, match="'flex' backend has no attention dropout.*"
                                         "dropout_p=0.*'csr'"):
        flex_na2d(q, k, v, 3, dropout_p=0.1)
    monkeypatch.setitem(backends.DEFAULT_ORDER, 'cpu', ('flex', 'csr'))
    torch.manual_seed(0)
    dropped = na2d(q, k, v, 3, dropout_p=0.5)
    torch.manual_seed(0)
    torch.testing.assert_close(dropped, na2d(q, k, v, 3, dropout_p=0.5, backend='csr'))


def test_torch_without_flex_attention_is_named_with_the_backend_to_use(monkeypatch,
                                                                      fresh_availability):
    """The seam's message for what compat.flex_attention_unusable_reason says on a torch
    without FlexAttention (the torch-matrix venvs of torch 2.1 and 2.4 give the real one:
    tests/test_compat.py)."""
    monkeypatch.setattr(flex, 'FLEX_UNUSABLE',
                        'torch 2.4.1 has no FlexAttention (torch.nn.attention.flex_attention)')
    with pytest.raises(ValueError, match=r"backend 'flex' is not available here \(torch .* has "
                                         r"no FlexAttention.*; use backend='csr'"):
        with na_backend('flex'):
            pass


def test_default_order_on_cuda_is_triton_flex_csr_and_never_flex_on_cpu():
    assert backends.DEFAULT_ORDER['cuda'] == ('triton', 'flex', 'csr')
    assert 'flex' not in backends.DEFAULT_ORDER['cpu']


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="FlexAttention has no backward on the CPU; needs a CUDA GPU")
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('kernel,dilation', [(7, 1), (5, 3)])
def test_backward_on_gpu_matches_reference(dtype, kernel, dilation):
    """Output and the q, k, v and rpb gradients on CUDA against the float64 reference."""
    qkv, q, k, v = make_qkv(2, 2, 24, 27, 32)
    rpb = make_rpb(2, kernel)
    grad_out = torch.randn(2, 2, 24, 27, 32)
    inputs = [t.detach().cuda().to(dtype).requires_grad_() for t in (q, k, v, rpb)]
    out = na2d(*inputs[:3], kernel, dilation, inputs[3], backend='flex')
    got = (out, *torch.autograd.grad(out, inputs, grad_out.cuda().to(dtype)))
    reference = [t.detach().to(dtype).double().requires_grad_() for t in (q, k, v, rpb)]
    out = na2d_reference(*reference[:3], kernel, dilation, reference[3])
    expected = (out, *torch.autograd.grad(out, reference, grad_out.to(dtype).double()))
    tol = 1e-4 if dtype == torch.float32 else 4e-2
    for name, g, e in zip(('out', 'dq', 'dk', 'dv', 'drpb'), got, expected):
        error = (g.double().cpu() - e).abs().max() / e.abs().max()
        assert error < tol, f'{name}: relative error {error:.2e}'
