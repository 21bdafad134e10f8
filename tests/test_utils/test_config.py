"""load_config: the one way nat_mm's entry points read a config."""
from mmengine.config import Config

from nat_mm.utils import load_config


def test_a_file_with_options_merged(tmp_path):
    path = tmp_path / 'config.py'
    path.write_text("model = dict(type='EncoderDecoder', backbone=dict(type='NAT', depth=3))\n")
    cfg = load_config(str(path), {'model.backbone.depth': 5, 'work_dir': 'w'})
    assert cfg.model.backbone == dict(type='NAT', depth=5)
    assert cfg.work_dir == 'w' and cfg.filename == str(path)
    assert load_config(str(path)).model.backbone.depth == 3


def test_a_config_object_is_copied_not_changed():
    original = Config(dict(model=dict(backbone=dict(depth=3))))
    cfg = load_config(original, {'model.backbone.depth': 7})
    assert cfg.model.backbone.depth == 7
    assert original.model.backbone.depth == 3
