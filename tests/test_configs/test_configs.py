"""Every shipped config: loads, follows the published recipe, builds through the registry
with the published parameter count (on the meta device), and runs ``loss`` and ``predict``
on generated data through its own data pipeline and data preprocessor (images shrunk 8x;
one config per head type at full width, the others with NAT at a narrow width, its depths,
kernel and dilations kept).
A narrow Mask2Former of each task trains a few iterations through MMEngine's Runner and is
evaluated with the real metric (panoptic: trained only, its metric needs panopticapi)."""
import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from synthetic_panoptic import PANOPTIC_STUFF_CLASSES, generate_coco_panoptic_like

from nat_mm import NAT
from nat_mm.datasets import SEG_CLASSES, SHAPE_CLASSES, generate_ade20k_like, generate_coco_like
from nat_mm.models.presets import ARCH_SETTINGS

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'

DINAT_COCO = [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7] * 3, [1, 3, 1, 3, 1]]
DINAT_ADE = [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4] * 3, [1, 2, 1, 2, 1]]
#: ``layer_scale`` absent from a config: the arch's own setting.
ARCH_DEFAULT = object()


def _variant(arch, drop_path, params_m, checkpoint=None, dilations=None, layer_scale=ARCH_DEFAULT,
             lr=None, fp16=True, crop=(512, 512)):
    return dict(arch=arch, drop_path=drop_path, params_m=params_m, dilations=dilations,
                checkpoint=checkpoint or f'checkpoints/nat_{arch}.pth', layer_scale=layer_scale,
                lr=lr, fp16=fp16, crop=crop)


def _dinat(arch, drop_path, params_m, dilations, layer_scale=ARCH_DEFAULT, **kwargs):
    """A DiNAT variant: its own ImageNet weights and, where DiNAT differs from NAT (small:
    none; base: 1e-5; large: none), an explicit layer scale."""
    checkpoint = ('checkpoints/dinat_large_in22k_224.pth' if arch == 'large'
                  else f'checkpoints/dinat_{arch}_in1k_224.pth')
    return _variant(arch, drop_path, params_m, checkpoint, dilations, layer_scale, **kwargs)


#: Published NAT / DiNAT settings and model sizes (NAT and DiNAT papers, official
#: repository); DiNAT has the parameters of NAT of its size (dilation adds none).
PUBLISHED = {
    'upernet_nat_mini_ade20k': _variant('mini', 0.2, 50),
    'upernet_nat_tiny_ade20k': _variant('tiny', 0.3, 58),
    'upernet_nat_small_ade20k': _variant('small', 0.5, 82),
    'upernet_nat_base_ade20k': _variant('base', 0.5, 123),
    'upernet_dinat_tiny_ade20k': _dinat('tiny', 0.3, 58, 'seg'),
    'upernet_dinat_mini_ade20k': _dinat('mini', 0.2, 50, 'seg'),
    'upernet_dinat_small_ade20k': _dinat('small', 0.5, 82, 'seg', layer_scale=False),
    'upernet_dinat_base_ade20k': _dinat('base', 0.5, 123, 'seg', layer_scale=1e-5),
    'upernet_dinat_large_ade20k': _dinat('large', 0.3, 238, 'seg_large', layer_scale=False,
                                         fp16=False, crop=(640, 640)),
    'mask_rcnn_nat_mini_coco': _variant('mini', 0.2, 40),
    'mask_rcnn_nat_tiny_coco': _variant('tiny', 0.2, 48),
    'mask_rcnn_nat_small_coco': _variant('small', 0.35, 70),
    'mask_rcnn_dinat_tiny_coco': _dinat('tiny', 0.2, 48, 'det'),
    'mask_rcnn_dinat_mini_coco': _dinat('mini', 0.2, 40, 'det'),
    'mask_rcnn_dinat_small_coco': _dinat('small', 0.35, 70, 'det', layer_scale=False),
    'cascade_mask_rcnn_nat_mini_coco': _variant('mini', 0.2, 77),
    'cascade_mask_rcnn_nat_tiny_coco': _variant('tiny', 0.3, 85),
    'cascade_mask_rcnn_nat_small_coco': _variant('small', 0.3, 108),
    'cascade_mask_rcnn_nat_base_coco': _variant('base', 0.5, 147),
    'cascade_mask_rcnn_dinat_tiny_coco': _dinat('tiny', 0.3, 85, 'det'),
    'cascade_mask_rcnn_dinat_mini_coco': _dinat('mini', 0.2, 77, 'det'),
    'cascade_mask_rcnn_dinat_small_coco': _dinat('small', 0.5, 108, 'det', layer_scale=False),
    'cascade_mask_rcnn_dinat_base_coco': _dinat('base', 0.6, 147, 'det', layer_scale=1e-5,
                                                lr=7.5e-5),
    'cascade_mask_rcnn_dinat_large_coco': _dinat('large', 0.6, 258, 'det', layer_scale=False,
                                                 lr=7.5e-5, fp16=False),
}
#: Mask2Former DiNAT-L (official detectron2 runs): task -> queries and published parameters.
MASK2FORMER = {
    'mask2former_dinat_large_coco_panoptic': dict(scope='mmdet', queries=200, params_m=220),
    'mask2former_dinat_large_coco_instance': dict(scope='mmdet', queries=200, params_m=220),
    'mask2former_dinat_large_ade20k': dict(scope='mmseg', queries=100, params_m=220),
}
DEMO_CONFIGS = ('demo/upernet_nat_demo', 'demo/mask_rcnn_nat_demo')
#: nat_mm/launch/hooks.py, on in every config (configs/_base_/nat_runtime.py).
NAT_HOOKS = [dict(type='FiniteLossHook'), dict(type='RNGStateHook')]
NO_DECAY = {'rpb': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}
SHRINK = 8
#: Published parameter counts are rounded to 1M: compare within 2%.
PARAMS_REL = 0.02


def load(name):
    return Config.fromfile(str(CONFIG_DIR / f'{name}.py'))


def test_every_config_is_covered():
    """Detection and segmentation configs; configs/mmpretrain/ is checked by
    test_mmpretrain_configs.py."""
    shipped = {str(p.relative_to(CONFIG_DIR).with_suffix(''))
               for p in CONFIG_DIR.rglob('*.py')
               if '_base_' not in p.parts and p.relative_to(CONFIG_DIR).parts[0] != 'mmpretrain'}
    assert shipped == set(PUBLISHED) | set(MASK2FORMER) | set(DEMO_CONFIGS)


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_published_recipe(name):
    cfg, expected = load(name), PUBLISHED[name]
    assert cfg.custom_imports == dict(imports=['nat_mm', 'nat_mm.launch.hooks'],
                                      allow_failed_imports=False)
    assert cfg.custom_hooks == NAT_HOOKS
    backbone = cfg.model.backbone
    assert backbone.type == 'NAT' and backbone.arch == expected['arch']
    assert backbone.kernel_size == 7
    assert backbone.drop_path_rate == expected['drop_path']
    assert backbone.get('dilations') == expected['dilations']
    assert backbone.get('layer_scale', ARCH_DEFAULT) == expected['layer_scale']
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=expected['checkpoint'])

    optim = cfg.optim_wrapper
    assert optim.type == ('AmpOptimWrapper' if expected['fp16'] else 'OptimWrapper')
    assert optim.get('constructor', 'DefaultOptimWrapperConstructor') == \
        'DefaultOptimWrapperConstructor'
    assert optim.paramwise_cfg == dict(custom_keys=NO_DECAY)
    assert optim.optimizer.type == 'AdamW' and optim.optimizer.betas == (0.9, 0.999)
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.batch_size * 8 == 16  # 8 GPUs x 2 images
    warmup, decay = cfg.param_scheduler

    if cfg.default_scope == 'mmseg':
        assert (optim.optimizer.lr, optim.optimizer.weight_decay) == (expected['lr'] or 6e-5, 0.01)
        assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 160000
        assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 1e-6, 1500)
        assert (decay.type, decay.power, decay.eta_min, decay.begin, decay.end) == \
            ('PolyLR', 1.0, 0.0, 1500, 160000)
        crop = expected['crop']
        assert cfg.crop_size == crop and cfg.model.data_preprocessor.size == crop
        scale = (4 * crop[0], crop[1])
        train_pipeline = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
        assert train_pipeline['RandomResize'].scale == scale
        assert train_pipeline['RandomCrop'].crop_size == crop
        assert cfg.test_dataloader.dataset.pipeline[1].scale == scale
        head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
        assert (head.type, head.channels, head.pool_scales, head.num_classes) == \
            ('UPerHead', 512, (1, 2, 3, 6), 150)
        assert (aux.type, aux.in_index, aux.channels, aux.loss_decode.loss_weight) == \
            ('FCNHead', 2, 256, 0.4)
    else:
        assert (optim.optimizer.lr, optim.optimizer.weight_decay) == (expected['lr'] or 1e-4, 0.05)
        assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 36
        assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == \
            ('LinearLR', 0.001, 500, False)
        assert (decay.type, decay.milestones, decay.gamma) == ('MultiStepLR', [27, 33], 0.1)
        augment = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomChoice']
        assert len(augment) == 1 and len(augment[0].transforms) == 2  # multi-scale | crop
        assert cfg.test_dataloader.dataset.pipeline[1].scale == (1333, 800)
        if name.startswith('cascade'):
            for head in cfg.model.roi_head.bbox_head:
                assert (head.type, head.num_shared_convs, head.num_shared_fcs) == \
                    ('ConvFCBBoxHead', 4, 1)
                assert head.norm_cfg.type == 'SyncBN'
                assert head.loss_bbox.type == 'GIoULoss' and head.reg_decoded_bbox


def test_dinat_configs_name_the_presets_nat_resolves():
    """The named dilations of every DiNAT config are the published lists of its size."""
    from nat_mm.models.presets import resolve_dilations
    depths = {'mini': (3, 4, 6, 5), 'tiny': (3, 4, 18, 5), 'small': (3, 4, 18, 5),
              'base': (3, 4, 18, 5), 'large': (3, 4, 18, 5)}
    for name, expected in PUBLISHED.items():
        if isinstance(expected['dilations'], str):
            lists = resolve_dilations(expected['dilations'], depths[expected['arch']])
            assert [len(stage) for stage in lists] == list(depths[expected['arch']]), name
    # the lists the DiNAT-Tiny configs spelled out before they named the presets
    assert resolve_dilations('det', depths['tiny']) == DINAT_COCO
    assert resolve_dilations('seg', depths['tiny']) == DINAT_ADE


@pytest.mark.parametrize('name', sorted(MASK2FORMER))
def test_mask2former_recipe(name):
    """The official Mask2Former DiNAT-L recipe (detectron2 configs) on the mmdet / mmseg bases."""
    cfg, expected = load(name), MASK2FORMER[name]
    assert cfg.default_scope == expected['scope']
    assert {'nat_mm', 'nat_mm.launch.hooks'} <= set(cfg.custom_imports.imports)
    assert cfg.custom_hooks == NAT_HOOKS
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.kernel_size, backbone.dilations) == \
        ('NAT', 'large', 11, 'm2f')
    assert backbone.drop_path_rate == 0.3 and backbone.layer_scale is False
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint='checkpoints/dinat_large_in22k_224.pth')
    head = cfg.model.get('panoptic_head') or cfg.model.decode_head
    assert head.type == 'Mask2FormerHead' and head.in_channels == [192, 384, 768, 1536]
    assert head.num_queries == expected['queries']
    assert head.pixel_decoder.encoder.num_layers == 6 and head.feat_channels == 256
    assert head.transformer_decoder.num_layers == 9
    assert head.transformer_decoder.layer_cfg.ffn_cfg.feedforward_channels == 2048
    assert head.transformer_decoder.layer_cfg.self_attn_cfg.num_heads == 8
    assert (head.loss_cls.loss_weight, head.loss_mask.loss_weight,
            head.loss_dice.loss_weight) == (2.0, 5.0, 5.0)
    assert head.loss_cls.class_weight[-1] == 0.1
    train_cfg = head.train_cfg if expected['scope'] == 'mmseg' else cfg.model.train_cfg
    assert train_cfg.num_points == 12544

    optim = cfg.optim_wrapper
    assert optim.type == 'OptimWrapper'                          # fp32
    assert optim.optimizer.type == 'AdamW'
    assert (optim.optimizer.lr, optim.optimizer.weight_decay) == (1e-4, 0.05)
    assert optim.clip_grad == dict(max_norm=0.01, norm_type=2)
    keys = optim.paramwise_cfg.custom_keys
    assert keys['backbone'] == dict(lr_mult=0.1, decay_mult=1.0)
    assert not any('stages' in key for key in keys)              # no Swin names left
    assert cfg.train_dataloader.batch_size * (16 if expected['scope'] == 'mmdet' else 8) == 16

    if expected['scope'] == 'mmseg':
        assert cfg.crop_size == (640, 640) and cfg.model.data_preprocessor.size == (640, 640)
        assert cfg.train_cfg.max_iters == 160000
        (poly,) = cfg.param_scheduler
        assert (poly.type, poly.end) == ('PolyLR', 160000)
    else:
        assert cfg.model.data_preprocessor.batch_augments[0].size == (1024, 1024)
        lsj = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
        assert lsj['RandomResize'].scale == (1024, 1024)
        assert lsj['RandomResize'].ratio_range == (0.1, 2.0)
        assert lsj['RandomCrop'].crop_size == (1024, 1024)
        panoptic = load('mask2former_dinat_large_coco_panoptic')
        assert cfg.train_cfg.max_iters == panoptic.train_cfg.max_iters == 737500  # 100 epochs
        assert cfg.param_scheduler.milestones == panoptic.param_scheduler.milestones
        is_instance = name.endswith('instance')
        assert cfg.model.test_cfg.panoptic_on is not is_instance
        assert cfg.model.test_cfg.instance_on


def test_mask2former_optimizer_groups():
    """Built on the real model: backbone at 0.1x lr; no decay on backbone norms, rpb and the
    query / level embeddings; decay 0.05 on backbone linears and head weights."""
    from mmengine.optim import build_optim_wrapper
    cfg = load('mask2former_dinat_large_ade20k')
    models, _ = _registries(cfg)
    cfg.model.backbone.init_cfg = None
    with torch.device('meta'):      # the parameters' names and shapes are what counts
        model = models.build(cfg.model)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {names[id(p)]: (g['lr'], g['weight_decay'])
              for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    assert groups['backbone.levels.2.blocks.17.attn.rpb'] == pytest.approx((1e-5, 0.0))
    assert groups['backbone.levels.1.blocks.3.norm2.weight'] == pytest.approx((1e-5, 0.0))
    assert groups['backbone.levels.0.downsample.norm.bias'] == pytest.approx((1e-5, 0.0))
    assert groups['backbone.norm3.weight'] == pytest.approx((1e-5, 0.0))
    assert groups['backbone.patch_embed.norm.weight'] == pytest.approx((1e-5, 0.0))
    assert groups['backbone.levels.2.blocks.10.mlp.fc1.weight'] == pytest.approx((1e-5, 0.05))
    assert groups['decode_head.query_embed.weight'] == pytest.approx((1e-4, 0.0))
    assert groups['decode_head.cls_embed.weight'] == pytest.approx((1e-4, 0.05))
    assert len(groups) == sum(1 for _ in model.parameters())


def _registries(cfg):
    init_default_scope(cfg.default_scope)
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    return registry.MODELS, registry.DATASETS


def _shrink(node):
    """Divide every image size in a pipeline / preprocessor config by SHRINK."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ('scale', 'crop_size', 'size') and isinstance(value, tuple):
                node[key] = tuple(v // SHRINK for v in value)
            elif key == 'scales':   # (w, h) pairs, or short sides (ResizeShortestEdge)
                node[key] = [s // SHRINK if isinstance(s, int) else tuple(v // SHRINK for v in s)
                             for s in value]
            elif key == 'max_size' and isinstance(value, int):
                node[key] = value // SHRINK
            else:
                _shrink(value)
    elif isinstance(node, list):
        for value in node:
            _shrink(value)


#: The generated COCO-panoptic categories: the shapes are things, the background is stuff.
PANOPTIC_METAINFO = dict(classes=SHAPE_CLASSES + PANOPTIC_STUFF_CLASSES,
                         thing_classes=SHAPE_CLASSES, stuff_classes=PANOPTIC_STUFF_CLASSES)


@pytest.fixture(scope='module')
def data_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    return dict(
        mmseg=generate_ade20k_like(root / 'ade', num_train=2, num_val=1, image_size=(64, 64)),
        mmdet=generate_coco_like(root / 'coco', num_train=2, num_val=1, image_size=(64, 96)),
        panoptic=generate_coco_panoptic_like(root / 'coco_panoptic', num_train=2, num_val=1,
                                             image_size=(64, 96)))


def _is_panoptic(cfg):
    return cfg.train_dataloader.dataset.type == 'CocoPanopticDataset'


def _rgb2id(color):
    """COCO panoptic segment id of PNG colours (..., 3): R + 256 G + 256^2 B."""
    color = np.asarray(color, dtype=np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 ** 2 * color[..., 2]


@pytest.fixture
def panopticapi(monkeypatch):
    """MMDetection's LoadPanopticAnnotations takes ``rgb2id`` from panopticapi, which the
    package registries here do not have. Where it is missing, a stand-in module with only
    that function (the COCO encoding, which tests/test_datasets checks against the
    generator) is importable for the duration of a test; the real one is used when installed."""
    try:
        import panopticapi.utils  # noqa: F401
        return
    except ImportError:
        pass
    package, utils = types.ModuleType('panopticapi'), types.ModuleType('panopticapi.utils')
    utils.rgb2id = _rgb2id
    package.utils = utils
    monkeypatch.setitem(sys.modules, 'panopticapi', package)
    monkeypatch.setitem(sys.modules, 'panopticapi.utils', utils)


def _fewer_rois(model_cfg):
    """Sample and keep fewer regions of interest: the RoI heads' cost grows with their number."""
    train, test = model_cfg.train_cfg, model_cfg.test_cfg
    train.rpn_proposal.max_per_img = 64
    test.rpn.max_per_img = 32
    test.rcnn.max_per_img = 10
    for stage in train.rcnn if isinstance(train.rcnn, list) else [train.rcnn]:
        stage.sampler.num = 32


def _shrink_for_cpu(cfg, data_roots):
    """Point the config at generated data; smaller images (and fewer RoIs), same model."""
    data_root = data_roots['panoptic' if _is_panoptic(cfg) else cfg.default_scope]
    for split in ('train', 'val'):
        dataset = cfg[f'{split}_dataloader'].dataset
        dataset.data_root = data_root
        if _is_panoptic(cfg):
            dataset.metainfo = PANOPTIC_METAINFO
        elif cfg.default_scope == 'mmdet':  # the generated COCO categories
            dataset.metainfo = dict(classes=SHAPE_CLASSES)
    _shrink(cfg.train_dataloader.dataset.pipeline)
    _shrink(cfg.val_dataloader.dataset.pipeline)
    _shrink(cfg.model.data_preprocessor)
    if cfg.model.get('rpn_head'):
        _fewer_rois(cfg.model)


def _num_params_m(model):
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize('name', sorted(PUBLISHED) + sorted(MASK2FORMER))
def test_published_parameter_count(name):
    """The model the config builds (through the registry, at full width) has the published
    size. Built on the meta device: the parameters' shapes without their memory or
    initialisation."""
    cfg = load(name)
    models, _ = _registries(cfg)
    cfg.model.backbone.init_cfg = None
    with torch.device('meta'):
        model = models.build(cfg.model)
    published = {**PUBLISHED, **MASK2FORMER}[name]
    assert _num_params_m(model) == pytest.approx(published['params_m'], rel=PARAMS_REL)


#: The configs built at full width for ``loss`` and ``predict``: one per head type. The
#: others run at a narrow width (``_narrow``); every config's full-width size is checked by
#: test_published_parameter_count.
FULL_WIDTH = ('upernet_dinat_tiny_ade20k', 'mask_rcnn_dinat_tiny_coco',
              'cascade_mask_rcnn_dinat_tiny_coco', 'mask2former_dinat_large_ade20k')
#: Channels per attention head of the narrow backbones.
NARROW_HEAD_DIM = 4


def _narrow(cfg):
    """The config's model at a narrow width, the rest as it is: NAT keeps its arch's depths,
    heads, mlp ratio and layer scale and the config's kernel, dilations and drop path, with
    NARROW_HEAD_DIM channels per head; the neck or heads take those widths (UperNet's own
    widths are cut to 64 and 32 channels). Mask2Former: ``_narrow_mask2former``."""
    head = cfg.model.get('panoptic_head') or cfg.model.get('decode_head')
    if head is not None and head.type == 'Mask2FormerHead':
        _narrow_mask2former(cfg)
        return
    backbone = cfg.model.backbone
    embed_dim = NARROW_HEAD_DIM * ARCH_SETTINGS[backbone.arch]['num_heads'][0]
    backbone.embed_dim = embed_dim
    widths = [embed_dim * 2 ** i for i in range(4)]
    if cfg.default_scope == 'mmseg':
        cfg.model.decode_head.update(in_channels=widths, channels=64)
        auxiliary = cfg.model.auxiliary_head
        auxiliary.update(in_channels=widths[auxiliary.in_index], channels=32)
    else:
        cfg.model.neck.in_channels = widths


@pytest.mark.parametrize('name', [
    pytest.param(name, marks=pytest.mark.slow) if name.startswith('mask2former') and
    name in FULL_WIDTH else name
    for name in sorted(PUBLISHED) + sorted(MASK2FORMER) + list(DEMO_CONFIGS)])
def test_build_loss_and_predict(name, data_roots, request):
    """Each config's pipeline, data preprocessor, backbone and heads together: a loss and a
    prediction on generated data (images shrunk SHRINK times)."""
    cfg = load(name)
    if _is_panoptic(cfg):
        request.getfixturevalue('panopticapi')
    models, datasets = _registries(cfg)
    cfg.model.backbone.init_cfg = None
    _shrink_for_cpu(cfg, data_roots)
    published = {**PUBLISHED, **MASK2FORMER}.get(name)
    if published and name not in FULL_WIDTH:
        _narrow(cfg)
    # as the Runner does in a single process
    model = revert_sync_batchnorm(models.build(cfg.model))
    if name in FULL_WIDTH:
        assert _num_params_m(model) == pytest.approx(published['params_m'], rel=PARAMS_REL)

    train_set = datasets.build(cfg.train_dataloader.dataset)
    batch = model.data_preprocessor(pseudo_collate([train_set[0], train_set[1]]), training=True)
    model.train()
    loss, log_vars = model.parse_losses(model(**batch, mode='loss'))
    assert torch.isfinite(loss) and loss > 0
    assert any('loss_mask' in key or 'decode.loss_ce' in key or 'loss_dice' in key
               for key in log_vars)

    model.eval()
    val_set = datasets.build(cfg.val_dataloader.dataset)
    with torch.no_grad():
        result = model.test_step(pseudo_collate([val_set[0]]))[0]
    height, width = result.ori_shape
    if cfg.default_scope == 'mmseg':
        prediction = result.pred_sem_seg.data
        assert prediction.shape == (1, height, width)
        num_classes = cfg.model.decode_head.num_classes
        assert 0 <= prediction.min() and prediction.max() < num_classes
    if 'pred_panoptic_seg' in result:
        assert result.pred_panoptic_seg.sem_seg.shape == (1, height, width)
    if 'pred_instances' in result:
        instances = result.pred_instances
        assert instances.bboxes.shape[1:] == (4, )
        assert instances.masks.shape[1:] == (height, width)


def test_demo_configs_inherit_the_real_ones():
    seg, det = (load(name) for name in DEMO_CONFIGS)
    assert seg.model.backbone.arch == det.model.backbone.arch == 'mini'
    assert seg.model.backbone.init_cfg is None and det.model.backbone.init_cfg is None
    assert seg.optim_wrapper.type == det.optim_wrapper.type == 'OptimWrapper'
    assert seg.optim_wrapper.paramwise_cfg == dict(custom_keys=NO_DECAY)
    assert seg.train_dataloader.dataset.metainfo.classes == SEG_CLASSES
    assert det.train_dataloader.dataset.metainfo.classes == SHAPE_CLASSES
    assert seg.model.decode_head.num_classes == len(SEG_CLASSES)
    assert det.model.roi_head.bbox_head.num_classes == len(SHAPE_CLASSES)
    assert det.val_evaluator.ann_file.startswith(det.data_root)


# ----- Mask2Former: a few iterations through the Runner, evaluated with the real metric -------

#: A CPU-sized DiNAT of the same structure (kernel 11, dilations, no layer scale).
NARROW_BACKBONE = dict(arch=dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                                 mlp_ratio=2.), dilations=[[2], [1], [1, 2], [1]],
                       drop_path_rate=0.1, init_cfg=None)
NARROW_WIDTH = 64


def _narrow_mask2former(cfg):
    """Same model types, 64 channels, 1 pixel-decoder and 3 decoder layers, 20 queries."""
    cfg.model.backbone.update(NARROW_BACKBONE)
    head = cfg.model.get('panoptic_head') or cfg.model.decode_head
    head.update(in_channels=[32, 64, 128, 256], feat_channels=NARROW_WIDTH,
                out_channels=NARROW_WIDTH, num_queries=20)
    encoder = head.pixel_decoder.encoder
    encoder.num_layers = 1
    encoder.layer_cfg.self_attn_cfg.embed_dims = NARROW_WIDTH
    encoder.layer_cfg.ffn_cfg.update(embed_dims=NARROW_WIDTH, feedforward_channels=128)
    for positional_encoding in (head.pixel_decoder.positional_encoding, head.positional_encoding):
        positional_encoding.num_feats = NARROW_WIDTH // 2
    decoder = head.transformer_decoder
    decoder.num_layers = 3
    for attention in ('self_attn_cfg', 'cross_attn_cfg'):
        decoder.layer_cfg[attention].embed_dims = NARROW_WIDTH
    decoder.layer_cfg.ffn_cfg.update(embed_dims=NARROW_WIDTH, feedforward_channels=128)
    (head.train_cfg if cfg.default_scope == 'mmseg' else cfg.model.train_cfg).num_points = 1024
    if cfg.default_scope == 'mmdet' and cfg.model.test_cfg.get('instance_on') \
            and not cfg.model.test_cfg.get('panoptic_on'):
        # The synthetic COCO data has the 3 shape classes; keep at most 20 x 3 results.
        num_classes = len(SHAPE_CLASSES)
        head.num_things_classes = cfg.model.panoptic_fusion_head.num_things_classes = num_classes
        head.loss_cls.class_weight = [1.0] * num_classes + [0.1]
        cfg.model.test_cfg.max_per_image = 20


@pytest.fixture(scope='module')
def runner_data_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp('runner_data')
    sizes = dict(num_train=4, num_val=2, image_size=(64, 64))
    return dict(mmseg=generate_ade20k_like(root / 'ade', **sizes),
                mmdet=generate_coco_like(root / 'coco', **sizes),
                panoptic=generate_coco_panoptic_like(root / 'coco_panoptic', **sizes))


#: config -> the metric it is evaluated with (None: trained only) and the keys checked.
MASK2FORMER_RUNS = {
    'mask2former_dinat_large_coco_instance': ('CocoMetric', ('coco/segm_mAP', 'coco/bbox_mAP')),
    'mask2former_dinat_large_ade20k': ('IoUMetric', ('mIoU', 'aAcc')),
    'mask2former_dinat_large_coco_panoptic': (None, ()),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(MASK2FORMER_RUNS))
def test_mask2former_trains_and_evaluates_through_the_runner(name, runner_data_roots, tmp_path,
                                                             request):
    from mmengine.runner import Runner
    metric, keys = MASK2FORMER_RUNS[name]
    cfg = load(name)
    if _is_panoptic(cfg):
        request.getfixturevalue('panopticapi')
    _narrow_mask2former(cfg)
    _shrink_for_cpu(cfg, runner_data_roots)
    iterations = 3
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iterations, val_interval=iterations)
    cfg.param_scheduler = []
    cfg.optim_wrapper.optimizer.lr = 1e-3
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].update(num_workers=0, persistent_workers=False)
    cfg.train_dataloader.batch_size = 2
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=iterations,
                                        by_epoch=False)
    if metric is None:              # CocoPanopticMetric needs panopticapi
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    else:
        cfg.val_evaluator = dict(type=metric) if metric == 'IoUMetric' else dict(
            type=metric, metric=['bbox', 'segm'],
            ann_file=f"{runner_data_roots['mmdet']}/annotations/instances_val2017.json")
    runner = Runner.from_cfg(cfg)
    assert isinstance(runner.model.backbone, NAT)
    assert runner.model.backbone.kernel_size == 11
    weights_before = runner.model.backbone.levels[0].blocks[0].attn.qkv.weight.detach().clone()
    runner.train()
    assert runner.iter == iterations
    assert not torch.equal(runner.model.backbone.levels[0].blocks[0].attn.qkv.weight,
                           weights_before)
    assert (tmp_path / f'iter_{iterations}.pth').is_file()
    for key in keys:                # the validation at the end of training
        value = runner.message_hub.get_scalar(f'val/{key}').current()
        assert 0 <= value <= (100 if metric == 'IoUMetric' else 1), (key, value)


@pytest.mark.parametrize('name', [name for name in PUBLISHED if name.startswith('upernet')])
def test_ade20k_configs_test_time_augmentation_is_the_published_one(name):
    """tools/test.py --tta: ratios 0.5-1.75, each with and without horizontal flip."""
    cfg = load(name)
    assert cfg.tta_model.type == 'SegTTAModel'
    load_image, augment = cfg.tta_pipeline
    assert load_image.type == 'LoadImageFromFile' and augment.type == 'TestTimeAug'
    resizes, flips, *rest = augment.transforms
    assert [(t.type, t.scale_factor, t.keep_ratio) for t in resizes] == [
        ('Resize', ratio, True) for ratio in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    assert [(t.type, t.prob, t.direction) for t in flips] == [
        ('RandomFlip', 0., 'horizontal'), ('RandomFlip', 1., 'horizontal')]
    assert [[t.type for t in step] for step in rest] == [['LoadAnnotations'], ['PackSegInputs']]


@pytest.mark.parametrize('name', [name for name in PUBLISHED if 'coco' in name])
def test_coco_configs_have_no_test_time_augmentation(name):
    """MMDetection's DetTTAModel refuses instance masks: tools/test.py --tta says so."""
    cfg = load(name)
    assert 'tta_model' not in cfg and 'tta_pipeline' not in cfg
