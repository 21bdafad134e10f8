"""ONNX export of NAT models, checked in ONNX Runtime against eager PyTorch.

Exports are slow (minutes on 2 cores), so each file is exported once per
module (module-scoped fixtures) and shared by the tests; the models are
narrow (one block per stage) to keep that affordable.
"""
from pathlib import Path

import pytest
import torch

from nat_mm import NAT
from nat_mm.deploy import (MIN_SIZE, OnnxModel, build_deploy_model, export_onnx,
                           max_differences, random_image)

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZES = [(224, 224), (97, 131), (256, 320)]
NARROW = dict(embed_dim=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8), mlp_ratio=2.)
#: DiNAT-style dilations and kernel 11: stage maps at 97x131 are 25x33 ... 4x5,
#: so the later stages go through the small-input padding.
DINAT_K11 = dict(arch=NARROW, kernel_size=11, dilations=[[2], [1, 2], [1], [1]])


def _eager(module, image):
    with torch.no_grad():
        out = module(image)
    return out if isinstance(out, (tuple, list)) else (out,)


@pytest.fixture(scope='module')
def dynamic_backbone(tmp_path_factory):
    torch.manual_seed(0)
    model = NAT(**DINAT_K11).eval()
    path = str(tmp_path_factory.mktemp('onnx') / 'nat_dynamic.onnx')
    export_onnx(model, SIZES[0], path, dynamic=True,
                output_names=[f'features{i}' for i in range(4)], metadata=dict(task='backbone'))
    return model, OnnxModel(path)


@pytest.mark.slow
@pytest.mark.parametrize('size', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_one_dynamic_file_matches_eager_at_every_size(dynamic_backbone, size):
    model, session = dynamic_backbone
    image = random_image(*size)
    abs_diff, _ = max_differences(_eager(model, image), session(image))
    assert abs_diff <= 1e-4


@pytest.mark.slow
def test_a_size_below_the_dynamic_minimum_is_refused(dynamic_backbone):
    _, session = dynamic_backbone
    with pytest.raises(ValueError, match=rf'dynamic export for heights and widths in '
                                         rf'\[{MIN_SIZE}, .*resize the image'):
        session(random_image(MIN_SIZE - 1, 64))


@pytest.mark.slow
def test_the_metadata_records_the_export(dynamic_backbone):
    _, session = dynamic_backbone
    assert session.metadata['dynamic'] is True
    assert session.metadata['input_shape'] == list(SIZES[0])
    assert session.output_names == [f'features{i}' for i in range(4)]


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
    with pytest.raises(ValueError, match='has no `model` dict'):
        build_deploy_model(str(no_model))


@pytest.mark.parametrize('name', ['mask2former_dinat_large_ade20k',
                                  'mask2former_dinat_large_coco_instance'])
def test_a_mask2former_config_is_a_clear_error(name):
    with pytest.raises(ValueError, match='Mask2FormerHead .*no tensor path nat_mm exports.*'
                                         'export a UperNet or Mask R-CNN config'):
        build_deploy_model(str(REPO_ROOT / 'configs' / f'{name}.py'))
