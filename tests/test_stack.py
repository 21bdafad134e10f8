"""The installed OpenMMLab stack is the pinned one and mmcv's compiled ops run on CPU.

The torch release is the one ``make setup`` installed: ``TORCH_VERSION`` when set (e.g. the
torch 2.1 stack, ``TORCH_VERSION=2.1.2 VENV=.venv-torch2.1 make test``), else the default of
scripts/torch_versions.txt; torchvision is its pair there."""
import importlib
import os
from pathlib import Path

import pytest
import torch
from environment import MATRIX_PROFILE

RELEASES = [line.split() for line in (Path(__file__).resolve().parents[1] / 'scripts' /
                                      'torch_versions.txt').read_text().splitlines()
            if line.strip() and not line.startswith('#')]
TORCH_RELEASE = next(release for release in RELEASES
                     if release[0] == os.environ.get('TORCH_VERSION', RELEASES[0][0]))
PINNED_VERSIONS = {
    'torch': TORCH_RELEASE[0],
    'torchvision': TORCH_RELEASE[1],
    'mmcv': '2.1.0',
    'mmengine': '0.10.7',
    'mmdet': '3.3.0',
    'mmseg': '1.2.2',
    'mmpretrain': '1.2.0',
}


@pytest.mark.skipif(MATRIX_PROFILE, reason='a torch-matrix venv has another torch by design')
@pytest.mark.parametrize('package, version', PINNED_VERSIONS.items())
def test_pinned_versions(package, version):
    installed = importlib.import_module(package).__version__
    assert installed.split('+')[0] == version


def box_iou(box, other):
    """IoU of two (x1, y1, x2, y2) boxes, areas as (x2 - x1) * (y2 - y1)."""
    width = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    height = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    intersection = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    other_area = (other[2] - other[0]) * (other[3] - other[1])
    return intersection / (area + other_area - intersection)


def greedy_nms(boxes, scores, classes, iou_threshold):
    """Per-class greedy NMS; kept indices by descending score."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for index in order:
        if all(classes[k] != classes[index] or box_iou(boxes[k], boxes[index]) <= iou_threshold
               for k in kept):
            kept.append(index)
    return kept


def test_batched_nms_on_hand_made_boxes():
    from mmcv.ops import batched_nms
    boxes = torch.tensor([
        [0., 0., 10., 10.],   # 0 class 0, kept
        [1., 1., 11., 11.],   # 1 class 0, IoU 81/119 with box 0: suppressed
        [20., 20., 30., 30.],  # 2 class 0, disjoint: kept
        [0., 0., 10., 10.],   # 3 class 1, same box as 0 but another class: kept
        [5., 0., 15., 10.],   # 4 class 1, IoU 1/3 with box 3: kept
        [0., 0., 10., 9.],    # 5 class 1, IoU 0.9 with box 3: suppressed
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.85, 0.95, 0.6])
    classes = torch.tensor([0, 0, 0, 1, 1, 1])

    dets, keep = batched_nms(boxes, scores, classes, dict(type='nms', iou_threshold=0.5))

    assert keep.tolist() == [4, 0, 3, 2]
    torch.testing.assert_close(dets[:, :4], boxes[[4, 0, 3, 2]])
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.95, 0.9, 0.85, 0.7]))


def test_batched_nms_matches_greedy_reference_on_random_boxes():
    from mmcv.ops import batched_nms
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(60, 2, generator=generator) * 40
    sizes = torch.rand(60, 2, generator=generator) * 15 + 2
    boxes = torch.cat([corners, corners + sizes], dim=1)
    scores = torch.rand(60, generator=generator)
    classes = torch.randint(0, 3, (60,), generator=generator)

    _, keep = batched_nms(boxes, scores, classes, dict(type='nms', iou_threshold=0.3))

    expected = greedy_nms(boxes.tolist(), scores.tolist(), classes.tolist(), 0.3)
    assert 0 < len(expected) < 60
    assert keep.tolist() == expected


@pytest.mark.parametrize('aligned, expected', [
    # Pixel centres sit at integer + 0.5: the 4x4 RoI from (2, 2) covers pixel
    # indices 1.5..5.5, its 2x2 bins are centred at index 2.5 and 4.5.
    (True, [[27.5, 29.5], [47.5, 49.5]]),
    # Legacy: RoI coordinates used as pixel indices, bins centred at 3 and 5.
    (False, [[33.0, 35.0], [53.0, 55.0]]),
])
@pytest.mark.parametrize('spatial_scale', [1.0, 0.25])
def test_roi_align_on_linear_ramp(aligned, expected, spatial_scale):
    """Bilinear sampling of f(y, x) = 10 y + x is exact, and the mean of a
    bin's symmetric samples is f at the bin centre. The RoI is given in image
    coordinates, spatial_scale maps it to the 8x8 map's (2, 2)-(6, 6)."""
    from mmcv.ops import RoIAlign
    rows = torch.arange(8.).view(8, 1)
    cols = torch.arange(8.).view(1, 8)
    ramp = 10 * rows + cols
    features = torch.stack([ramp, ramp + 100]).unsqueeze(1)  # (2, 1, 8, 8)
    corners = [coordinate / spatial_scale for coordinate in (2., 2., 6., 6.)]
    rois = torch.tensor([[0., *corners], [1., *corners]])  # (batch index, x1, y1, x2, y2)
    roi_align = RoIAlign(output_size=(2, 2), spatial_scale=spatial_scale, sampling_ratio=2,
                         aligned=aligned)

    pooled = roi_align(features, rois)

    expected = torch.tensor(expected)
    torch.testing.assert_close(pooled, torch.stack([expected, expected + 100]).unsqueeze(1))


@pytest.mark.parametrize('package, model', [('mmdet', 'MaskRCNN'), ('mmseg', 'UPerHead')])
def test_downstream_models_import(package, model):
    importlib.import_module(f'{package}.models')
    registry = importlib.import_module(f'{package}.registry').MODELS
    assert registry.get(model) is not None
