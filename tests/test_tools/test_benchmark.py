"""tools/analysis_tools/benchmark.py: a config's inference speed and memory on its test
data (the demo segmentor on the tiny generated dataset; no timing assertions)."""
import textwrap
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = 'analysis_tools/benchmark'
SEG_DEMO = str(REPO_ROOT / 'configs' / 'demo' / 'upernet_nat_demo.py')


def test_times_the_timed_batches_with_a_checkpoint(load_tool, tiny_ade, tmp_path, capsys):
    pytest.importorskip('mmseg.utils')
    tool = load_tool(TOOL)
    options = ['--cfg-options', f'test_dataloader.dataset.data_root={tiny_ade}']
    cfg = tool.Config.fromfile(SEG_DEMO)
    torch.manual_seed(0)
    tool.importlib.import_module('mmseg.utils').register_all_modules(init_default_scope=True)
    model = tool.build_model(cfg, None, torch.device('cpu'))
    checkpoint = tmp_path / 'demo.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    result = tool.main([SEG_DEMO, str(checkpoint), '--max-iter', '1', '--num-warmup', '1',
                        '--device', 'cpu', *options])
    assert result['images'] == result['batches'] == 1 and len(result['seconds']) == 1
    assert result['fps'] == pytest.approx(1 / result['seconds'][0])
    # measured in this process: pages freed by earlier tests can be reused unseen, so the
    # growth may be 0 (profiling's own test checks the amount in a fresh process)
    assert isinstance(result['peak_bytes'], int) and result['peak_bytes'] >= 0
    out = capsys.readouterr().out
    assert 'images/s over 1 images' in out and f'checkpoint {checkpoint}' in out
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
