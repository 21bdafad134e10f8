"""tools/deployment/: export_onnx.py on a segmentor and a detector (dynamic height and width),
onnx_seg_demo.py against MMSegmentation's own inference.

Each export runs once (module-scoped fixtures; a minute or more on 2 cores). The models are
the demo configs with a narrow backbone, random weights saved as a checkpoint, so that the
tool, ONNX Runtime and mmseg all run the same model.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from environment import requires_torch_export
from mmengine.config import Config
from PIL import Image

from nat_mm.deploy import (MIN_SIZE, OnnxModel, build_deploy_model, max_differences,
                           random_image)

pytestmark = requires_torch_export

REPO_ROOT = Path(__file__).resolve().parents[2]
NARROW_ARCH = dict(_delete_=True, embed_dim=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8),
                   mlp_ratio=2.)
#: The demo configs with a narrow backbone: (base config, overrides). The segmentor's is a
#: DiNAT with kernel 11 (dilations in stages 1 and 2), the detector's a NAT with kernel 7.
NARROW = {
    'seg': ('configs/demo/upernet_nat_demo.py', dict(
        backbone=dict(arch=NARROW_ARCH, kernel_size=11, dilations=[[2], [1, 2], [1], [1]]),
        decode_head=dict(in_channels=[32, 64, 128, 256]),
        auxiliary_head=dict(in_channels=128))),
    'det': ('configs/demo/mask_rcnn_nat_demo.py', dict(
        backbone=dict(arch=NARROW_ARCH), neck=dict(in_channels=[32, 64, 128, 256]))),
}
#: One dynamic file, three sizes: 97x131 has stage maps 25x33 ... 4x5 (the segmentor's
#: kernel-11 stages from stage 2 on go through the small-input padding; UperNet's 6x6
#: pyramid pooling has more output cells than its 4x5 map has pixels).
SIZES = {'seg': [(224, 224), (97, 131), (512, 683)], 'det': [(128, 160), (97, 131)]}


def _narrow_config(task, root):
    base, model = NARROW[task]
    path = root / f'narrow_{task}.py'
    path.write_text(f"_base_ = {str(REPO_ROOT / base)!r}\nmodel = {model!r}\n")
    return str(path)


def _export(task, root, load_tool):
    """A random-weight checkpoint of the narrowed config, exported by export_onnx.py with
    --dynamic and compared at SIZES[task]; returns (config, checkpoint, the tool's result)."""
    config = _narrow_config(task, root)
    torch.manual_seed(0)
    deploy = build_deploy_model(config)
    model = deploy.module.segmentor if task == 'seg' else deploy.module.detector
    checkpoint = root / f'{task}.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    sizes = SIZES[task]
    checks = [arg for size in sizes[1:] for arg in ('--check-shape', *map(str, size))]
    result = load_tool('deployment/export_onnx').main([
        config, str(checkpoint), '--shape', *map(str, sizes[0]), '--dynamic', *checks,
        '--out', str(root / f'{task}.onnx'), '--repeats', '1'])
    return config, checkpoint, result


@pytest.fixture(scope='module')
def seg_export(tmp_path_factory, load_tool):
    return _export('seg', tmp_path_factory.mktemp('deploy_seg'), load_tool)


@pytest.fixture(scope='module')
def det_export(tmp_path_factory, load_tool):
    return _export('det', tmp_path_factory.mktemp('deploy_det'), load_tool)


@pytest.mark.slow
@pytest.mark.parametrize('task', ['seg', 'det'])
def test_one_dynamic_file_matches_eager_at_every_size(task, request):
    config, checkpoint, result = request.getfixturevalue(f'{task}_export')
    # what the tool printed
    assert [row['shape'] for row in result['rows']] == SIZES[task]
    assert all(row['max_abs_diff'] <= 1e-4 for row in result['rows']), result['rows']
    # checked again here, on other inputs, against the checkpoint's model built anew
    deploy = build_deploy_model(config, str(checkpoint))
    session = OnnxModel(result['out'])
    assert session.metadata['dynamic'] is True and session.metadata['task'] == task
    assert session.metadata['input_shape'] == list(SIZES[task][0])
    for size in SIZES[task]:
        image = random_image(*size, seed=7)
        with torch.no_grad():
            expected = deploy.module(image)
        expected = expected if isinstance(expected, tuple) else (expected,)
        if task == 'det':   # FPN: 5 levels, strides 4 ... 64
            assert len(expected) == 5 and expected[0].shape[-2:] == (
                -(-size[0] // 4), -(-size[1] // 4))
        assert max_differences(expected, session(image))[0] <= 1e-4, size


@pytest.mark.slow
def test_a_size_below_the_dynamic_minimum_is_refused(seg_export):
    *_, result = seg_export
    with pytest.raises(ValueError, match=rf'dynamic export for heights and widths in '
                                         rf'\[{MIN_SIZE}, .*resize the image'):
        OnnxModel(result['out'])(random_image(MIN_SIZE - 1, 64))


@pytest.mark.slow
def test_onnx_seg_demo_agrees_with_mmseg_inference(seg_export, tmp_path, load_tool):
    """ONNX Runtime + numpy + PIL only, labels against mmseg's inference_model (the
    config's test pipeline and data preprocessor) on the same weights."""
    from mmseg.apis import inference_model, init_model
    config, checkpoint, result = seg_export
    # 128 x 160: the demo's test scale (512, 128) keeps it as is, so no image resize differs
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((160, 128), Image.BILINEAR)
    image_path = tmp_path / 'image.png'
    image.save(image_path)
    out = tmp_path / 'seg.png'
    load_tool('deployment/onnx_seg_demo').main([str(result['out']), str(image_path),
                                            '--out', str(out)])

    cfg = Config.fromfile(config)
    model = init_model(cfg, str(checkpoint), device='cpu')
    expected = inference_model(model, str(image_path)).pred_sem_seg.data[0].numpy()
    palette = np.asarray(cfg.metainfo['palette'], dtype=np.uint8)
    colours = np.asarray(Image.open(out).convert('RGB'))
    assert colours.shape == (128, 160, 3)
    # colour -> label through the palette
    matches = (colours[:, :, None, :] == palette[None, None]).all(-1)
    assert matches.any(-1).all(), 'a pixel colour is not in the palette'
    labels = matches.argmax(-1)
    assert len(np.unique(expected)) > 1          # a meaningful comparison
    # bilinear resizing of the logits differs at borders (PIL vs torch)
    assert (labels == expected).mean() >= 0.99


def test_a_static_segmentor_export_refuses_check_shapes(load_tool):
    with pytest.raises(SystemExit, match='--check-shape needs --dynamic'):
        load_tool('deployment/export_onnx').main([str(REPO_ROOT / NARROW['seg'][0]),
                                              '--shape', '64', '64',
                                              '--check-shape', '96', '96'])


@pytest.mark.slow
def test_onnx_seg_demo_refuses_a_detector_file(det_export, tmp_path, load_tool):
    *_, result = det_export
    image_path = tmp_path / 'image.png'
    Image.new('RGB', (64, 48)).save(image_path)
    with pytest.raises(ValueError, match='no nat_mm segmentation metadata.*segmentation config'):
        load_tool('deployment/onnx_seg_demo').main([str(result['out']), str(image_path),
                                                '--out', str(tmp_path / 'x.png')])
