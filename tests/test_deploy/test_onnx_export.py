"""ONNX export of a bare NAT backbone (static shape), checked in ONNX Runtime against
eager PyTorch, and the configs nat_mm refuses to export.

Dynamic-shape export (several sizes from one file, the smallest size refused) is tested
once, on whole models, through tools/deployment/export_onnx.py
(tests/test_tools/test_deploy_tools.py): a DiNAT kernel-11 segmentor and a NAT detector.
"""
from pathlib import Path

import pytest
import torch
from environment import requires_torch_export

from nat_mm import NAT
from nat_mm.deploy import (OnnxModel, build_deploy_model, export_onnx, max_differences,
                           random_image)

pytestmark = requires_torch_export

REPO_ROOT = Path(__file__).resolve().parents[2]
NARROW = dict(embed_dim=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8), mlp_ratio=2.)


def _eager(module, image):
    with torch.no_grad():
        out = module(image)
    return out if isinstance(out, (tuple, list)) else (out,)


@pytest.mark.slow
def test_a_static_file_refuses_other_sizes_and_says_what_to_do(tmp_path):
    torch.manual_seed(0)
    model = NAT(arch=dict(NARROW, depths=(1, 1, 1, 1))).eval()
    path = str(tmp_path / 'nat_static.onnx')
    export_onnx(model, (97, 131), path, output_names=[f'f{i}' for i in range(4)])
    session = OnnxModel(path)
    image = random_image(97, 131)
    assert max_differences(_eager(model, image), session(image))[0] <= 1e-4
    with pytest.raises(ValueError, match='exported for 97x131 inputs only.*--dynamic'):
        session(random_image(128, 128))


def test_a_config_without_a_tensor_path_is_a_clear_error(tmp_path):
    config = tmp_path / 'backbone_only.py'
    config.write_text("default_scope = 'mmseg'\n"
                      "model = dict(type='NAT', arch='mini')\n")
    with pytest.raises(ValueError, match='NAT, which has no tensor path to export.*segmentor or '
                                         'detector config'):
        build_deploy_model(str(config))
    no_model = tmp_path / 'no_model.py'
    no_model.write_text("default_scope = 'mmseg'\n")
    with pytest.raises(ValueError) as error:
        build_deploy_model(str(no_model))
    assert str(error.value) == (f'{no_model}: the config has no `model` dict; give a segmentation '
                                '(mmseg) or detection (mmdet) model config such as '
                                'configs/upernet_nat_tiny_ade20k.py')


@pytest.mark.parametrize('name', ['mask2former_dinat_large_ade20k',
                                  'mask2former_dinat_large_coco_instance'])
def test_a_mask2former_config_is_a_clear_error(name):
    with pytest.raises(ValueError, match='Mask2FormerHead .*no tensor path nat_mm exports.*'
                                         'export a UperNet or Mask R-CNN config'):
        build_deploy_model(str(REPO_ROOT / 'configs' / f'{name}.py'))
