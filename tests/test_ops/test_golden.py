"""Every backend that runs here, and the reference, against NATTEN 0.17.5's own numbers."""
import functools

import pytest
import torch

from nat_mm.ops import NeighborhoodAttention2D, na2d, na2d_reference
from conftest import CPU_BACKENDS
from na_testing import load_golden

GOLDEN = load_golden()
IMPLEMENTATIONS = {'reference': na2d_reference,
                   **{name: functools.partial(na2d, backend=name) for name in CPU_BACKENDS}}


def _case_id(case):
    return 'K{kernel_size}d{dilation}_{h}x{w}'.format(
        h=case['q'].shape[2], w=case['q'].shape[3], **case)


def test_golden_data_spans_the_published_kernels_and_dilations():
    cases = GOLDEN['cases']
    assert GOLDEN['natten_version'] == '0.17.5'
    assert {c['kernel_size'] for c in cases} == {3, 5, 7, 9, 11, 13}
    assert {c['dilation'] for c in cases} == {1, 2, 3, 4}
    assert all(c['q'].dtype == torch.float64 for c in cases)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
@pytest.mark.parametrize('case', GOLDEN['cases'], ids=_case_id)
def test_float64_output_and_gradients_match_natten(implementation, case):
    q, k, v, rpb = (case[name].clone().requires_grad_(True) for name in ('q', 'k', 'v', 'rpb'))
    out = IMPLEMENTATIONS[implementation](q, k, v, case['kernel_size'], case['dilation'], rpb,
                                          case['scale'])
    grads = torch.autograd.grad(out, (q, k, v, rpb), case['grad_out'])
    for name, got in zip(('out', 'dq', 'dk', 'dv', 'drpb'), (out, *grads)):
        torch.testing.assert_close(got, case[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize('module_case', GOLDEN['modules'],
                         ids=lambda m: f"K{m['kernel_size']}d{m['dilation']}")
def test_module_with_natten_weights_matches_natten(module_case):
    attn = NeighborhoodAttention2D(module_case['dim'], module_case['num_heads'],
                                   module_case['kernel_size'], module_case['dilation']).double()
    attn.load_state_dict(module_case['state_dict'])
    with torch.no_grad():
        y = attn.eval()(module_case['x'])
    torch.testing.assert_close(y, module_case['y'], rtol=1e-9, atol=1e-12)
