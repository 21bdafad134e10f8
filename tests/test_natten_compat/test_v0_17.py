"""NATTEN 0.14-0.17's API on nat_mm against NATTEN 0.17.5's own numbers (float64, gradients
too), the neighbour order of its attention weights, and its module (bad input:
test_arguments.py)."""
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
