"""tools/analysis_tools/benchmark_na.py: bfloat16 inputs, the memory it measures, the table."""
import pytest
import torch

TOOL = 'analysis_tools/benchmark_na'
#: The smallest case: (2, 8, 32, 32, 32) float32 maps, 2 MiB each.
CASE = 'stage3@512 (B2 h8 32x32)'


@pytest.fixture(scope='module')
def benchmark_na(load_tool):
    return load_tool(TOOL)


def test_benchmark_na_runs_in_bfloat16(benchmark_na):
    """Both implementations run on bfloat16 inputs and agree (rpb in the inputs' dtype)."""
    inputs = benchmark_na.make_inputs(CASE, torch.device('cpu'), torch.bfloat16)
    assert {t.dtype for t in inputs} == {torch.bfloat16}
    fast, reference = (benchmark_na.run_once(impl, CASE, inputs, backward=False)
                       for impl in ('fast', 'reference'))
    torch.testing.assert_close(fast.float(), reference.float(), atol=3e-2, rtol=3e-2)
    benchmark_na.run_once('fast', CASE, inputs, backward=True)
    assert all(t.grad is None for t in inputs)                      # cleared for the next run


def test_inference_memory_sees_the_reference_k_squared_copies(benchmark_na):
    """In a fresh process. Independent check: the gather reference copies keys and values
    K*K times, 2 * 49 * (output size) here. (No upper bound: under memory pressure the
    kernel reclaims pages before the call, which inflates any RSS growth.)"""
    batch, heads, height, width, head_dim = benchmark_na.CASES[CASE][:5]
    output_bytes = batch * heads * height * width * head_dim * 4
    peak = benchmark_na.peak_memory('reference', CASE, torch.device('cpu'), torch.float32,
                                    mode='fwd')
    assert peak >= 0.9 * 2 * 49 * output_bytes


def test_table_has_both_modes_for_time_and_memory(benchmark_na):
    lines = []
    results = benchmark_na.benchmark([CASE], 'cpu', torch.float32, repeats=1, emit=lines.append,
                                     fresh_process=False, backend='export')
    assert 'fast = backend export' in lines[0] and 'peak RSS, this process' in lines[0]
    assert lines[1].split('|')[3].split() == ['fwd', 'mem', 'ref', 'fast', 'ratio']
    assert lines[1].split('|')[4].split() == ['f+b', 'mem', 'ref', 'fast', 'ratio']
    assert lines[3].startswith(CASE)
    memory = results[CASE]['memory']
    assert set(memory) == {(impl, mode) for impl in ('fast', 'reference')
                           for mode in ('fwd', 'fwd+bwd')}
    # In this process a call can reuse pages an earlier one freed, so growth may be 0: the
    # amounts are checked in a fresh process above; here that the table shows them.
    assert all(isinstance(value, int) for value in memory.values())
    for column, mode in zip(lines[3].split('|')[3:], ('fwd', 'fwd+bwd')):
        reference, fast = memory[('reference', mode)], memory[('fast', mode)]
        assert column.split() == [f'{reference / 2**20:.0f}MB', f'{fast / 2**20:.0f}MB',
                                  f'{fast / max(reference, 1):.3f}']
