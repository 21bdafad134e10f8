"""NATTEN 0.14-0.17's API on nat_mm against NATTEN 0.17.5's own numbers (float64, gradients
too), the neighbour order of its attention weights, its module, and what it refuses."""
from pathlib import Path

import pytest
import torch

from nat_mm.natten_compat import v0_17
from nat_mm.ops.reference import window_1d

GOLDEN = torch.load(Path(__file__).resolve().parents[1] / 'data' / 'natten_0.17.5_na2d.pt',
                    weights_only=True)
GRADIENTS = ('dq', 'dk', 'dv', 'drpb')


def _case_id(case):
    return 'K{kernel_size}d{dilation}_{h}x{w}'.format(
        h=case['q'].shape[2], w=case['q'].shape[3], **case)


def _split_0_17(q, k, v, rpb, kernel, dilation, scale):
    attn = v0_17.na2d_qk(q * scale, k, kernel, dilation, rpb=rpb).softmax(dim=-1)
    return v0_17.na2d_av(attn, v, kernel, dilation)


def _split_0_14(q, k, v, rpb, kernel, dilation, scale):
    attn = v0_17.natten2dqkrpb(q * scale, k, rpb, kernel, dilation).softmax(dim=-1)
    return v0_17.natten2dav(attn, v, kernel, dilation)


def _split_0_15(q, k, v, rpb, kernel, dilation, scale):
    attn = v0_17.na2d_qk_with_bias(q * scale, k, rpb, kernel, dilation).softmax(dim=-1)
    return v0_17.na2d_av(attn, v, (kernel, kernel), (dilation, dilation))


def _fused_0_17(q, k, v, rpb, kernel, dilation, scale):
    """0.17's fused na2d takes and returns heads-last tensors."""
    heads_last = (t.permute(0, 2, 3, 1, 4) for t in (q, k, v))
    out = v0_17.na2d(*heads_last, kernel, dilation, rpb=rpb, scale=scale)
    assert out.is_contiguous()
    return out.permute(0, 3, 1, 2, 4)


FORMS = {'na2d_qk+na2d_av': _split_0_17, 'natten2dqkrpb+natten2dav': _split_0_14,
         'na2d_qk_with_bias': _split_0_15, 'fused na2d': _fused_0_17}


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('case', GOLDEN['cases'], ids=_case_id)
def test_output_and_gradients_equal_natten_0_17_5(form, case):
    q, k, v, rpb = (case[name].clone().requires_grad_(True) for name in ('q', 'k', 'v', 'rpb'))
    out = FORMS[form](q, k, v, rpb, case['kernel_size'], case['dilation'], case['scale'])
    grads = torch.autograd.grad(out, (q, k, v, rpb), case['grad_out'])
    torch.testing.assert_close(out, case['out'], rtol=1e-9, atol=1e-12)
    for name, got in zip(GRADIENTS, grads):
        torch.testing.assert_close(got, case[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize('kernel, dilation, height, width', [(3, 2, 7, 9), (5, 1, 6, 11)])
def test_attention_weights_are_in_natten_neighbour_order(kernel, dilation, height, width):
    """Weight i * K + j of a query is its window's row i, column j (from the window's start),
    worked out here from the definition, independently of the operator's index tables."""
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, height, width, 4, generator=gen, dtype=torch.float64)
            for _ in range(2))
    rpb = torch.randn(2, 2 * kernel - 1, 2 * kernel - 1, generator=gen, dtype=torch.float64)
    logits = v0_17.na2d_qk(q, k, kernel, dilation, rpb=rpb)
    assert logits.shape == (1, 2, height, width, kernel * kernel)
    for y in range(height):
        for x in range(width):
            rows, row_bias = window_1d(y, height, kernel, dilation)
            cols, col_bias = window_1d(x, width, kernel, dilation)
            expected = torch.stack([
                (q[0, :, y, x] * k[0, :, rows[i], cols[j]]).sum(-1)
                + rpb[:, row_bias[i], col_bias[j]]
                for i in range(kernel) for j in range(kernel)], dim=-1)
            torch.testing.assert_close(logits[0, :, y, x], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('module_case', GOLDEN['modules'],
                         ids=lambda m: f"K{m['kernel_size']}d{m['dilation']}")
def test_module_loads_natten_state_dict_and_matches(module_case):
    """NATTEN 0.17's constructor (keywords as NATTEN names them; a per-axis kernel size)."""
    attn = v0_17.NeighborhoodAttention2D(
        dim=module_case['dim'], num_heads=module_case['num_heads'],
        kernel_size=(module_case['kernel_size'],) * 2, dilation=module_case['dilation'],
        is_causal=(False, False), rel_pos_bias=True).double()
    assert sorted(attn.state_dict()) == sorted(module_case['state_dict'])
    attn.load_state_dict(module_case['state_dict'])
    with torch.no_grad():
        y = attn.eval()(module_case['x'])
    torch.testing.assert_close(y, module_case['y'], rtol=1e-9, atol=1e-12)


def test_module_without_rel_pos_bias_has_no_rpb():
    """rel_pos_bias defaults to False in NATTEN 0.17 (True in 0.14's ``bias``)."""
    attn = v0_17.NeighborhoodAttention2D(16, 2, 7)
    assert sorted(attn.state_dict()) == ['proj.bias', 'proj.weight', 'qkv.bias', 'qkv.weight']


def _qkv(heads_last=False):
    shape = (1, 8, 8, 2, 4) if heads_last else (1, 2, 8, 8, 4)
    return tuple(torch.randn(shape) for _ in range(3))


REFUSED = {
    'causal na2d_qk': (lambda: v0_17.na2d_qk(*_qkv()[:2], 3, 1, is_causal=True),
                       r'na2d_qk: is_causal=True: causal .*NATTEN 0\.17\+.*is_causal=False'),
    'causal per axis na2d': (
        lambda: v0_17.na2d(*_qkv(True), 3, 1, is_causal=(False, True)),
        r'na2d: is_causal=\(False, True\).*NATTEN 0\.17\+'),
    'per-axis kernel': (lambda: v0_17.na2d_av(torch.randn(1, 2, 8, 8, 15), _qkv()[2], (3, 5)),
                        r'na2d_av: kernel_size=\(3, 5\): a different value per axis .*0\.17\+'
                        r'.*kernel_size=3 or 5'),
    'per-axis dilation': (lambda: v0_17.na2d(*_qkv(True), 3, (1, 2)),
                          r'na2d: dilation=\(1, 2\).*0\.17\+'),
    'additional keys': (lambda: v0_17.na2d_qk(*_qkv()[:2], 3, 1, torch.randn(1, 2, 5, 4)),
                        r'na2d_qk: additional_keys=.*NATTEN 0\.15\.1\+.*additional_keys=None'),
    'additional values': (
        lambda: v0_17.na2d(*_qkv(True), 3, additional_values=torch.randn(1, 5, 2, 4)),
        r'na2d: additional_values=.*NATTEN 0\.17\+'),
    'causal module': (lambda: v0_17.NeighborhoodAttention2D(8, 2, 3, is_causal=True),
                      r'NeighborhoodAttention2D: is_causal=True'),
    '1-D legacy': (lambda: v0_17.natten1dqkrpb(None, None, None, 3, 1),
                   r'natten\.functional\.natten1dqkrpb \(NATTEN 0\.14\+\): 1-D .*2-D'),
    '1-D': (lambda: v0_17.na1d_qk(None, None, 3), r'natten\.functional\.na1d_qk .*1-D'),
    '3-D': (lambda: v0_17.na3d(None, None, None, 3), r'natten\.functional\.na3d \(NATTEN 0\.17'
                                                     r'\+\): 3-D'),
    '3-D module': (lambda: v0_17.NeighborhoodAttention3D(8, 2, 3),
                   r'natten\.NeighborhoodAttention3D \(NATTEN 0\.15\+\): 3-D'),
}


@pytest.mark.parametrize('what', REFUSED)
def test_features_nat_mm_lacks_raise_not_implemented(what):
    call, message = REFUSED[what]
    with pytest.raises(NotImplementedError, match=message):
        call()


BAD_SHAPES = {
    'query not 5-D': (lambda: v0_17.natten2dqkrpb(torch.randn(2, 8, 8, 4), torch.randn(2, 8, 8, 4),
                                                  None, 3, 1), r'query must have 5 dims'),
    'key shape': (lambda: v0_17.na2d_qk(torch.randn(1, 2, 8, 8, 4), torch.randn(1, 2, 8, 9, 4), 3),
                  r'shapes disagree'),
    'rpb shape': (lambda: v0_17.na2d_qk(*_qkv()[:2], 3, rpb=torch.randn(2, 7, 7)),
                  r'rpb must have shape \(heads, 2K-1, 2K-1\) = \(2, 5, 5\)'),
    'map smaller than window': (lambda: v0_17.na2d_qk(*_qkv()[:2], 3, 3),
                                r'smaller than kernel_size \* dilation'),
    'attn last dim': (lambda: v0_17.natten2dav(torch.randn(1, 2, 8, 8, 10), _qkv()[2], 3, 1),
                      r'attn must have shape \(B, heads, H, W, K\*K\) = \(1, 2, 8, 8, 9\)'),
    'attn dtype': (lambda: v0_17.na2d_av(torch.randn(1, 2, 8, 8, 9, dtype=torch.float64),
                                         _qkv()[2], 3), r'same dtype and device'),
    'even kernel': (lambda: v0_17.na2d_qk(*_qkv()[:2], 4), r'kernel_size must be an odd int'),
    'fused heads-first 4-D': (lambda: v0_17.na2d(torch.randn(8, 8, 2, 4), *_qkv(True)[1:], 3),
                              r'query must be \(B, H, W, heads, head_dim\)'),
    'kernel triple': (lambda: v0_17.na2d_qk(*_qkv()[:2], (3, 3, 3)),
                      r'kernel_size must be an int or one value per axis'),
}


@pytest.mark.parametrize('what', BAD_SHAPES)
def test_wrong_shapes_raise_na2d_errors(what):
    call, message = BAD_SHAPES[what]
    with pytest.raises(ValueError, match=message):
        call()
