"""tools/analysis_tools/benchmark_natten_compat.py: what it times agrees, and its table."""
import pytest
import torch

from nat_mm.utils.profiling import attention_inputs

CASE = 'B2 h8 32x32 K7'


@pytest.fixture(scope='module')
def tool(load_tool):
    return load_tool('analysis_tools/benchmark_natten_compat')


def test_split_and_fused_forms_compute_the_same(tool):
    inputs = attention_inputs(*tool.CASES[CASE][:6], 'cpu', torch.float64)
    q, k, v, rpb = (t.detach() for t in inputs)
    impls = tool.implementations()
    torch.testing.assert_close(impls['split'](q, k, v, rpb, 7, 1),
                               impls['fused'](q, k, v, rpb, 7, 1), rtol=1e-9, atol=1e-12)


def test_table_has_every_implementation_and_mode(tool):
    lines = []
    results = tool.benchmark([CASE], 'cpu', torch.float32, repeats=1, emit=lines.append)
    assert set(results[CASE]) == {(impl, mode) for impl in ('split', 'fused')
                                  for mode in tool.MODES}
    assert all(seconds > 0 for seconds in results[CASE].values())
    assert len(lines) == 2 + 2 and lines[-1].startswith(CASE) and 'fused' in lines[-1]


def test_unknown_case_is_refused(tool, capsys):
    with pytest.raises(SystemExit):
        tool.parse_args(['--cases', 'B1 h1 8x8'])
    assert "invalid choice: 'B1 h1 8x8'" in capsys.readouterr().err
