"""tools/benchmark.py: the attention-free floor and a smoke run of the whole table."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nat_mm import NAT

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def benchmark():
    spec = importlib.util.spec_from_file_location('tools_benchmark',
                                                  ROOT / 'tools' / 'benchmark.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_removes_only_the_attention_core(benchmark):
    """In the floor each attention layer outputs proj(v): qkv and proj still run."""
    import nat_mm.ops.module as na_module
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
    assert na_module.na2d is not benchmark._pass_value_through      # restored


def test_shape_parsing(benchmark):
    assert benchmark.parse_shape('512x512:2') == (512, 512, 2)
    assert benchmark.parse_shape('800x1344') == (800, 1344, 1)
    with pytest.raises(Exception, match='shape must look like'):
        benchmark.parse_shape('512')


def test_smoke_run_prints_the_table():
    """All three models, training step, one repeat at a tiny shape (no timing assertions)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'benchmark.py'), '--shapes', '64x64',
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
    assert 'targets: NOT MEASURED' in result.stdout
