"""tools/analysis_tools/benchmark.py: a config's inference speed and memory on its test
data (the demo segmentor on the tiny generated dataset; no timing assertions)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from environment import require_module
from nat_mm.utils import load_config, profiling

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = 'analysis_tools/benchmark'
#: Runs the tool (argv[1]) with the rest of argv; its result as the last line, JSON.
PROBE = '''\
import importlib.util
import json
import sys

spec = importlib.util.spec_from_file_location('benchmark', sys.argv[1])
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
print(json.dumps(tool.main(sys.argv[2:])))
'''
SEG_DEMO = str(REPO_ROOT / 'configs' / 'demo' / 'upernet_nat_demo.py')


def test_times_the_timed_batches_with_a_checkpoint(load_tool, tool_path, tiny_ade, tmp_path):
    """In a fresh process (profiling.FRESH_PROCESS_ENV: every freed block >= 64 KiB goes back
    to the OS), so the peak memory of the timed batch is at least any one tensor it makes, e.g.
    the stem's first convolution output, (1, C/2, H/2, W/2) float32 for the 128x128 input the test
    pipeline makes of a 64x64 image (NAT-Mini: C = 64)."""
    require_module('mmseg.utils')
    tool = load_tool(TOOL)
    options = ['--cfg-options', f'test_dataloader.dataset.data_root={tiny_ade}']
    cfg = load_config(SEG_DEMO)
    torch.manual_seed(0)
    tool.importlib.import_module('mmseg.utils').register_all_modules(init_default_scope=True)
    model = tool.build_model(cfg, None, torch.device('cpu'))
    checkpoint = tmp_path / 'demo.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    probe = tmp_path / 'probe.py'
    probe.write_text(PROBE)
    run = subprocess.run([sys.executable, str(probe), str(tool_path(TOOL)), SEG_DEMO,
                          str(checkpoint), '--max-iter', '1', '--num-warmup', '1',
                          '--device', 'cpu', *options], capture_output=True, text=True,
                         env=dict(os.environ, **profiling.FRESH_PROCESS_ENV), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    *out, last = run.stdout.strip().splitlines()
    result = json.loads(last)
    assert result['images'] == result['batches'] == 1 and len(result['seconds']) == 1
    assert result['fps'] == pytest.approx(1 / result['seconds'][0])
    assert result['peak_bytes'] >= 32 * 64 * 64 * 4
    summary = '\n'.join(out)
    assert 'images/s over 1 images' in summary and f'checkpoint {checkpoint}' in summary
    assert f'peak extra memory {result["peak_bytes"] / 2**20:.0f} MB' in summary
    with pytest.raises(ValueError, match='all used by --num-warmup 2'):   # 2 test images
        tool.main([SEG_DEMO, '--max-iter', '5', '--num-warmup', '2', '--device', 'cpu',
                   *options])


def test_other_libraries_configs_are_refused(load_tool, tmp_path):
    config = tmp_path / 'cls.py'
    config.write_text(textwrap.dedent('''\
        default_scope = 'mmpretrain'
        model = dict(type='ImageClassifier')
    '''))
    with pytest.raises(ValueError, match="default_scope 'mmpretrain' is not one of"):
        load_tool(TOOL).main([str(config), '--device', 'cpu'])
