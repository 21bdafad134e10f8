"""The 'export' backend (dense ops for torch.export / ONNX) against the gather
reference and NATTEN's numbers, and its automatic selection while exporting."""
import itertools
from pathlib import Path

import pytest
import torch
from environment import requires_torch_export

from nat_mm.ops import NeighborhoodAttention2D, na2d, na2d_reference, na_backend
from nat_mm.ops.export import TILE

_HERE = Path(__file__).resolve()
GOLDEN = next(p for p in (_HERE.parents[1] / 'data' / 'natten_0.17.5_na2d.pt',
                          _HERE.parents[2] / '..' / 'shared' / 'golden' / 'natten_0.17.5_na2d.pt')
              if p.exists())

# Widths around the tile size and dilation groups of unequal lengths.
CASES = [(h, w, k, d) for (h, w), k, d in itertools.product(
    [(7, 7), (13, 9), (11, 2 * TILE + 3), (24, 37)], [3, 7, 11], [1, 2, 3])
    if min(h, w) >= k * d]


@pytest.mark.parametrize('with_rpb', [True, False], ids=['rpb', 'no_rpb'])
@pytest.mark.parametrize('height,width,kernel,dilation', CASES)
def test_float32_matches_float64_reference(height, width, kernel, dilation, with_rpb):
    gen = torch.Generator().manual_seed(height * width + kernel + dilation)
    q, k, v = torch.randn(3, 2, 3, height, width, 8, generator=gen, dtype=torch.float64)
    rpb = torch.randn(3, 2 * kernel - 1, 2 * kernel - 1, generator=gen,
                      dtype=torch.float64) if with_rpb else None
    expected = na2d_reference(q, k, v, kernel, dilation, rpb)
    got = na2d(q.float(), k.float(), v.float(), kernel, dilation,
               None if rpb is None else rpb.float(), backend='export')
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('case', torch.load(GOLDEN, weights_only=True)['cases'],
                         ids=lambda c: f"K{c['kernel_size']}d{c['dilation']}_"
                                       f"{c['q'].shape[2]}x{c['q'].shape[3]}")
def test_float64_output_matches_natten(case):
    out = na2d(case['q'], case['k'], case['v'], case['kernel_size'], case['dilation'],
               case['rpb'], case['scale'], backend='export')
    torch.testing.assert_close(out, case['out'], rtol=1e-9, atol=1e-12)


class _Attention(torch.nn.Module):
    """na2d with the default backend choice, on q, k, v stacked in one input."""

    def __init__(self, kernel, dilation, backend=None):
        super().__init__()
        self.kernel, self.dilation, self.backend = kernel, dilation, backend
        self.rpb = torch.nn.Parameter(torch.randn(2, 2 * kernel - 1, 2 * kernel - 1))

    def forward(self, qkv):                         # (3, B, heads, H, W, D)
        q, k, v = qkv.unbind(0)
        return na2d(q, k, v, self.kernel, self.dilation, self.rpb, backend=self.backend)


@requires_torch_export
def test_exporting_selects_the_export_backend_even_inside_a_csr_context():
    """The CPU default (CSR: sparse tensors, torch.compiler.disable) cannot be
    traced; while exporting na2d must use 'export', whatever the context."""
    module = _Attention(5, 2).eval()
    qkv = torch.randn(3, 1, 2, 12, 17, 8)
    with na_backend('csr'):
        program = torch.export.export(module, (qkv,))
    ops = {str(node.target) for node in program.graph.nodes if node.op == 'call_function'}
    assert not any('sparse' in op for op in ops), ops
    assert any('embedding' in op for op in ops), ops
    torch.testing.assert_close(program.module()(qkv), module(qkv), atol=1e-5, rtol=1e-5)


@requires_torch_export
def test_an_explicit_untraceable_backend_is_refused_while_exporting():
    with pytest.raises(ValueError, match="backend 'csr' cannot be exported.*backend=None"):
        torch.export.export(_Attention(3, 1, backend='csr').eval(),
                            (torch.randn(3, 1, 2, 8, 8, 4),))


@requires_torch_export
def test_one_dynamic_program_serves_sizes_at_and_above_the_window():
    """torch.export with symbolic H, W from kernel * dilation up: the windows
    are computed from the symbolic sizes."""
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(16, 2, kernel_size=5, dilation=2).eval()
    from torch.export import Dim
    program = torch.export.export(
        module, (torch.randn(1, 14, 23, 16),),
        dynamic_shapes={'x': {1: Dim('height', min=10, max=512),
                              2: Dim('width', min=10, max=512)}})
    for height, width in [(10, 31), (26, 15)]:
        x = torch.randn(1, height, width, 16)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), module(x), atol=1e-5, rtol=1e-5)


@requires_torch_export
@pytest.mark.slow
def test_one_onnx_file_serves_sizes_below_and_above_the_window(tmp_path):
    """ONNX (dynamo exporter) with symbolic H, W down to 1: maps smaller than
    kernel * dilation go through the zero-padding rule exactly as in eager
    mode. (Plain torch.export refuses a range spanning the window size: the
    size checks become guards it cannot prove; the ONNX exporter defers them.)"""
    import onnxruntime as ort
    from torch.export import Dim
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(16, 2, kernel_size=5, dilation=2).eval()
    path = str(tmp_path / 'attention.onnx')
    torch.onnx.export(module, (torch.randn(1, 14, 23, 16),), dynamo=True, verbose=False,
                      dynamic_shapes={'x': {1: Dim('height', min=1, max=512),
                                            2: Dim('width', min=1, max=512)}}).save(path)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for height, width in [(3, 4), (9, 10), (26, 15)]:
        x = torch.randn(1, height, width, 16)
        with torch.no_grad():
            expected = module(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert abs(got - expected).max() <= 1e-5
