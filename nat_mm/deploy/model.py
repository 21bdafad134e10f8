"""The exportable module of a config: tensors in, tensors out.

MMDetection/MMSegmentation models take and return data samples; what can be
exported is their tensor path:

- segmentors (mmseg ``BaseSegmentor``): the decode head's logits of a
  normalised image, i.e. ``EncoderDecoder._forward`` (mmseg's ``mode='tensor'``);
- detectors (mmdet ``BaseDetector``): backbone + neck (``extract_feat``); the
  RPN/RoI heads need mmcv's compiled RoI ops, which ONNX has no equivalent of.

Mask2Former/MaskFormer models (mmdet or mmseg) are refused: their heads need
data samples and mmcv's deformable attention.

mmdet and mmseg are imported inside the functions that need them only.
"""
import inspect
from typing import NamedTuple

import torch
from torch import nn

from ..utils.config import load_config


class SegmentorLogits(nn.Module):
    """A segmentor's tensor forward.

    Shape:
        input ``image`` (B, 3, H, W), normalised as the data preprocessor does;
        output (B, num_classes, H_out, W_out) logits (H/4 x W/4 for UperNet).
    """

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, image):
        return self.segmentor._forward(image)


class BackboneNeck(nn.Module):
    """A detector's backbone + neck.

    Shape:
        input ``image`` (B, 3, H, W), normalised; output a tuple of the neck's
        feature maps (B, C, H / s, W / s), one per level (FPN: strides 4 ... 64).
    """

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, image):
        return tuple(self.detector.extract_feat(image))


class DeployModel(NamedTuple):
    """What :func:`build_deploy_model` returns.

    module: the exportable module (eval mode), float32 on CPU.
    task: 'seg' or 'det'.
    output_names: one name per output tensor.
    metadata: JSON-able facts the ONNX file keeps (preprocessing, classes).
    """
    module: nn.Module
    task: str
    output_names: tuple
    metadata: dict


def _preprocessing(cfg):
    """mean/std/channel order of the config's data preprocessor."""
    pre = cfg.model.get('data_preprocessor') or {}
    mean = pre.get('mean')
    std = pre.get('std')
    return dict(mean=list(mean) if mean is not None else [0., 0., 0.],
                std=list(std) if std is not None else [1., 1., 1.],
                bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)))


def needs_data_samples(head):
    """Whether a head (class or module) takes the batch's data samples in ``forward``
    besides the features, as Mask2Former/MaskFormer heads do."""
    return 'batch_data_samples' in inspect.signature(head.forward).parameters


def config_test_scale(cfg):
    """The ``scale`` of the test pipeline's Resize, or None."""
    pipeline = (cfg.get('test_pipeline') or
                cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline') or [])
    for step in pipeline:
        scale = step.get('scale') if step.get('type') == 'Resize' else None
        if scale is not None:
            return [scale, scale] if isinstance(scale, int) else list(scale)
    return None


def _dataset_meta(model, cfg):
    """(classes, palette) from a checkpoint's meta or the config's dataset."""
    meta = getattr(model, 'dataset_meta', None) or {}
    if 'classes' not in meta:
        dataset = cfg.get('test_dataloader', {}).get('dataset', {})
        meta = dict(dataset.get('metainfo') or {})
        if 'classes' not in meta and dataset.get('type'):
            from mmengine.registry import DATASETS
            cls = DATASETS.get(dataset['type'])
            meta = dict(getattr(cls, 'METAINFO', {}))
    classes = meta.get('classes')
    palette = meta.get('palette')
    return (list(classes) if classes is not None else None,
            [list(map(int, c)) for c in palette] if palette is not None else None)


def build_deploy_model(config, checkpoint=None, cfg_options=None):
    """The exportable module of an mmseg/mmdet config.

    Args:
        config: path of a config (or an mmengine Config); its ``default_scope``
            ('mmseg' or 'mmdet') chooses the registry.
        checkpoint: optional weights (an MMEngine checkpoint of the whole model).
        cfg_options: dict merged into the config.

    Returns:
        :class:`DeployModel`.

    Raises:
        ValueError: the config has no model, or its model has no tensor path
            nat_mm can export (not a segmentor or a detector, or a Mask2Former /
            MaskFormer head).
    """
    cfg = load_config(config, cfg_options)
    if not isinstance(cfg.get('model'), dict):
        raise ValueError(
            f'{config}: the config has no `model` dict; give a segmentation (mmseg) or '
            'detection (mmdet) model config such as configs/upernet_nat_tiny_ade20k.py')
    import nat_mm  # noqa: F401  (registers NAT)
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    scope = cfg.get('default_scope')
    if scope not in ('mmseg', 'mmdet'):
        raise ValueError(
            f'{config}: default_scope is {scope!r}; nat_mm exports mmseg segmentors (logits) '
            "and mmdet detectors (backbone + neck): use a config with default_scope 'mmseg' "
            "or 'mmdet'")
    init_default_scope(scope)
    if scope == 'mmseg':
        from mmseg.models import BaseSegmentor as expected
        from mmseg.registry import MODELS
    else:
        from mmdet.models import BaseDetector as expected
        from mmdet.registry import MODELS
    # Refused before building (a DiNAT-L Mask2Former takes seconds and GBs to build).
    head = cfg.model.get('decode_head') or cfg.model.get('panoptic_head')
    head_class = MODELS.get(head['type']) if isinstance(head, dict) else None
    if head_class is not None and needs_data_samples(head_class):
        raise ValueError(
            f"{config}: the head {head['type']} (Mask2Former/MaskFormer) has no tensor path "
            "nat_mm exports: it needs data samples, and its pixel decoder uses mmcv's "
            'deformable attention; export a UperNet or Mask R-CNN config, or the backbone '
            'alone (nat_mm.deploy.export_onnx on the built NAT module)')
    model_cfg = cfg.model.copy()
    # Weights come from `checkpoint`; do not read the backbone's pretrained file.
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    if not isinstance(model, expected):
        raise ValueError(
            f'{config}: the model is a {type(model).__name__}, which has no tensor path to '
            f'export (nat_mm exports {expected.__name__}s: segmentor logits or detector backbone '
            '+ neck); give a segmentor or detector config')
    if checkpoint is not None:
        from mmengine.runner import load_checkpoint
        ckpt = load_checkpoint(model, checkpoint, map_location='cpu')
        meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
        if meta.get('dataset_meta'):
            model.dataset_meta = meta['dataset_meta']
    model = revert_sync_batchnorm(model).float().eval()
    metadata = dict(_preprocessing(cfg), test_scale=config_test_scale(cfg))
    if scope == 'mmseg':
        classes, palette = _dataset_meta(model, cfg)
        metadata.update(classes=classes, palette=palette)
        return DeployModel(SegmentorLogits(model).eval(), 'seg', ('logits',), metadata)
    levels = cfg.model.get('neck', {}).get('num_outs') or len(cfg.model.backbone.get(
        'out_indices', (0, 1, 2, 3)))
    return DeployModel(BackboneNeck(model).eval(), 'det',
                       tuple(f'features{i}' for i in range(levels)), metadata)


@torch.no_grad()
def random_image(height, width, batch=1, seed=0):
    """A normalised-looking input (B, 3, H, W) float32, reproducible."""
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
