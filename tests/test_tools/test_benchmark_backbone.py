"""tools/analysis_tools/benchmark_backbone.py: the attention-free floor, the targets, a
smoke run of the whole table."""
import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nat_mm import NAT, na2d

ROOT = Path(__file__).resolve().parents[2]
TOOL = 'analysis_tools/benchmark_backbone'


@pytest.fixture(scope='module')
def benchmark(load_tool):
    return load_tool(TOOL)


def test_floor_removes_only_the_attention_core(benchmark):
    """In the floor each attention layer outputs proj(v): qkv and proj still run; outside
    it na2d attends again."""
    torch.manual_seed(0)
    nat = NAT(arch=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                        mlp_ratio=2.)).eval()
    attention = nat.levels[0].blocks[0].attn
    seen = {}
    attention.register_forward_hook(lambda module, args, out: seen.update(x=args[0], out=out))
    with torch.no_grad():
        benchmark.AttentionFree(nat)(torch.randn(1, 3, 40, 48))
        x = seen['x']
        value = attention.qkv(x)[..., 2 * attention.dim:]
        torch.testing.assert_close(seen['out'], attention.proj(value))
    q, k, v = torch.randn(3, 1, 1, 8, 8, 4).unbind(0)
    assert not torch.allclose(na2d(q, k, v, 3), v)                   # default backend again


def test_shape_parsing(benchmark):
    assert benchmark.parse_shape('512x512:2') == (512, 512, 2)
    assert benchmark.parse_shape('800x1344') == (800, 1344, 1)
    with pytest.raises(argparse.ArgumentTypeError,
                       match=r"^shape must look like 512x512 or 512x512:2, got '512'$"):
        benchmark.parse_shape('512')


@pytest.mark.slow
def test_smoke_run_prints_the_table(tool_path):
    """All three models, training step, one repeat at a tiny shape (no timing assertions)."""
    result = subprocess.run(
        [sys.executable, str(tool_path(TOOL)), '--shapes', '64x64',
         '--modes', 'train', '--repeats', '1'],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith('shape'))
    for column in ('NAT-Tiny', 'Swin-T', 'NAT-T floor', 'NAT/Swin', 'NAT/floor', 'attn share',
                   'mem NAT/Swin'):
        assert column in header
    rows = [line for line in lines if line.startswith('64x64:1')]
    assert [row.split()[1] for row in rows] == ['train']
    assert 'targets (cpu): NOT MEASURED' in result.stdout


def _results(shapes, nat_time, nat_memory):
    """Benchmark results where Swin-T takes 1 s and 1000 bytes, the floor 0.8 s."""
    return {(shape, 'train'): dict(time=dict(nat=nat_time, swin=1.0, floor=0.8),
                                   memory=dict(nat=nat_memory, swin=1000, floor=900))
            for shape in shapes}


def test_cuda_targets_at_both_sizes(benchmark):
    shapes = [(512, 512, 2), (800, 1344, 2)]
    passed, lines = benchmark.check_targets(_results(shapes, 0.95, 650), 'cuda')
    assert passed is True and lines[-1] == 'targets (cuda): PASS'
    assert sum(line.startswith('PASS') for line in lines) == 4     # time, memory x 2 sizes
    results = _results(shapes, 0.95, 650)
    results[(shapes[1], 'train')]['memory']['nat'] = 750            # 0.75x > 0.7x
    passed, lines = benchmark.check_targets(results, 'cuda')
    assert passed is False
    assert ('FAIL: train step 800x1344:2: NAT peak memory <= 0.70x Swin-T (measured 0.75x)'
            in lines)
    passed, lines = benchmark.check_targets(_results(shapes[:1], 0.95, 650), 'cuda')
    assert passed is None and 'NOT MEASURED' in lines[0] and '800x1344:2' in lines[0]


def test_cpu_targets_include_the_floor(benchmark):
    passed, lines = benchmark.check_targets(_results([(512, 512, 2)], 1.05, 900), 'cpu')
    assert passed is False
    assert 'FAIL: train step 512x512:2: NAT time <= 1.00x Swin-T (measured 1.05x)' in lines
    assert 'FAIL: train step 512x512:2: NAT time <= 1.25x NAT-T floor (measured 1.31x)' in lines
    assert 'PASS: train step 512x512:2: NAT peak memory <= 1.00x Swin-T (measured 0.90x)' in lines
