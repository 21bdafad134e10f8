"""tools/misc/print_config.py: the merged config after _base_, _delete_ and --cfg-options."""
import textwrap

import pytest
from mmengine.config import Config

TOOL = 'misc/print_config'


@pytest.fixture
def configs(tmp_path):
    """A base config with a Swin-like backbone and a child that replaces it with NAT."""
    (tmp_path / 'base.py').write_text(textwrap.dedent('''\
        model = dict(
            type='EncoderDecoder',
            backbone=dict(type='SwinTransformer', depths=[2, 2, 6, 2], window_size=7),
            decode_head=dict(type='UPerHead', channels=512, num_classes=150))
        train_cfg = dict(max_iters=160000)
    '''))
    (tmp_path / 'child.py').write_text(textwrap.dedent('''\
        _base_ = './base.py'
        model = dict(
            backbone=dict(_delete_=True, type='NAT', arch='tiny', dilations='seg'),
            decode_head=dict(num_classes=2))
    '''))
    return tmp_path


def test_prints_bases_merged_deletions_applied_and_options(configs, load_tool, capsys):
    text = load_tool(TOOL).main([str(configs / 'child.py'), '--cfg-options',
                                 'train_cfg.max_iters=20', 'model.backbone.drop_path_rate=0.1'])
    assert capsys.readouterr().out.strip() == text.strip()
    merged = Config.fromstring(text, '.py')
    assert merged.model.backbone == dict(type='NAT', arch='tiny', dilations='seg',
                                         drop_path_rate=0.1)            # Swin keys deleted
    assert merged.model.decode_head == dict(type='UPerHead', channels=512, num_classes=2)
    assert merged.train_cfg.max_iters == 20 and merged.model.type == 'EncoderDecoder'


def test_key_and_save_path(configs, load_tool, tmp_path):
    out = tmp_path / 'merged.py'
    tool = load_tool(TOOL)
    text = tool.main([str(configs / 'child.py'), '--key', 'model.backbone',
                      '--save-path', str(out)])
    assert Config.fromstring(text, '.py').to_dict() == dict(type='NAT', arch='tiny',
                                                            dilations='seg')
    saved = Config.fromfile(str(out))
    assert '_base_' not in saved and saved.model.decode_head.num_classes == 2
    assert tool.main([str(configs / 'base.py'), '--key', 'model.backbone.depths.2']) == '6'


@pytest.mark.parametrize('key, message', [
    ('model.neck', "model has no entry 'neck'; it has \\['backbone', 'decode_head', 'type'\\]"),
    ('model.backbone.depths.7', 'model.backbone.depths is a list of 4 entries'),
    ('train_cfg.max_iters.x', 'train_cfg.max_iters is 160000, neither a dict nor a list'),
])
def test_unknown_key_says_what_is_there(configs, load_tool, key, message):
    with pytest.raises(KeyError, match=message):
        load_tool(TOOL).main([str(configs / 'base.py'), '--key', key])
