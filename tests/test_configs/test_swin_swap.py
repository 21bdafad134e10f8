"""The README's snippets that put NAT into MMDetection's Mask R-CNN Swin-T and
MMSegmentation's UperNet Swin-T configs build working models, and the naive swap (the
same snippet without ``_delete_=True``) stops with the ValueError that says how to fix it."""
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from nat_mm import NAT

REPO_ROOT = Path(__file__).resolve().parents[2]
BASES = {
    'mmdet': "_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'",
    'mmseg': "_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_"
             "ade20k-512x512.py'",
}
DELETE_LINE = re.compile(r'^\s*_delete_=True,.*\n', re.MULTILINE)


def readme_snippet(base_line):
    """The README's python block that starts with ``base_line``."""
    blocks = re.findall(r'```python\n(.*?)```', (REPO_ROOT / 'README.md').read_text(), re.DOTALL)
    matching = [block for block in blocks if block.startswith(base_line + '\n')]
    assert len(matching) == 1, f'README: one python block starting with {base_line}'
    return matching[0]


def build(snippet, tmp_path):
    path = tmp_path / 'swap.py'
    path.write_text(snippet)
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    return registry.build(cfg.model)


@pytest.mark.parametrize('scope', sorted(BASES))
def test_readme_snippet_builds_nat_into_the_swin_config(scope, tmp_path):
    model = build(readme_snippet(BASES[scope]), tmp_path)
    assert type(model.backbone) is NAT
    assert model.backbone.arch_settings['depths'] == (3, 4, 18, 5)  # NAT-Tiny, not Swin-T's
    model.eval()
    with torch.no_grad():
        features = model.extract_feat(torch.randn(1, 3, 64, 64))
        if scope == 'mmdet':  # the FPN ran on NAT's widths
            assert [f.shape[1] for f in features] == [256] * 5
        else:  # so do the heads
            assert model.decode_head(features).shape == (1, 150, 16, 16)
            assert model.auxiliary_head(features).shape == (1, 150, 16, 16)


@pytest.mark.parametrize('scope', sorted(BASES))
def test_swap_without_delete_names_the_swin_arguments_and_the_fix(scope, tmp_path):
    snippet = readme_snippet(BASES[scope])
    naive = DELETE_LINE.sub('', snippet)
    assert naive != snippet
    with pytest.raises(ValueError) as error:
        build(naive, tmp_path)
    message = str(error.value)
    for name in ('embed_dims', 'window_size', 'patch_size', 'strides', 'patch_norm'):
        assert name in message
    assert '_delete_=True' in message and 'in_channels' in message
