"""Every shipped config: loads, follows the published recipe, builds through the registry
with the published parameter count, and runs ``loss`` and ``predict`` on generated data
through its own data pipeline and data preprocessor (images shrunk 8x, model unchanged)."""
import importlib
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from nat_mm.datasets import SEG_CLASSES, SHAPE_CLASSES, generate_ade20k_like, generate_coco_like

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'

DINAT_COCO = [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7] * 3, [1, 3, 1, 3, 1]]
DINAT_ADE = [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4] * 3, [1, 2, 1, 2, 1]]


def _variant(arch, drop_path, params_m, checkpoint=None, dilations=None):
    return dict(arch=arch, drop_path=drop_path, params_m=params_m, dilations=dilations,
                checkpoint=checkpoint or f'checkpoints/nat_{arch}.pth')


DINAT_CHECKPOINT = 'checkpoints/dinat_tiny_in1k_224.pth'
#: Published NAT / DiNAT settings and model sizes (NAT and DiNAT papers); DiNAT-Tiny has
#: NAT-Tiny's parameters (dilation adds none).
PUBLISHED = {
    'upernet_nat_mini_ade20k': _variant('mini', 0.2, 50),
    'upernet_nat_tiny_ade20k': _variant('tiny', 0.3, 58),
    'upernet_nat_small_ade20k': _variant('small', 0.5, 82),
    'upernet_nat_base_ade20k': _variant('base', 0.5, 123),
    'upernet_dinat_tiny_ade20k': _variant('tiny', 0.3, 58, DINAT_CHECKPOINT, DINAT_ADE),
    'mask_rcnn_nat_mini_coco': _variant('mini', 0.2, 40),
    'mask_rcnn_nat_tiny_coco': _variant('tiny', 0.2, 48),
    'mask_rcnn_nat_small_coco': _variant('small', 0.35, 70),
    'mask_rcnn_dinat_tiny_coco': _variant('tiny', 0.2, 48, DINAT_CHECKPOINT, DINAT_COCO),
    'cascade_mask_rcnn_nat_mini_coco': _variant('mini', 0.2, 77),
    'cascade_mask_rcnn_nat_tiny_coco': _variant('tiny', 0.3, 85),
    'cascade_mask_rcnn_nat_small_coco': _variant('small', 0.3, 108),
    'cascade_mask_rcnn_nat_base_coco': _variant('base', 0.5, 147),
    'cascade_mask_rcnn_dinat_tiny_coco': _variant('tiny', 0.3, 85, DINAT_CHECKPOINT, DINAT_COCO),
}
DEMO_CONFIGS = ('demo/upernet_nat_demo', 'demo/mask_rcnn_nat_demo')
NO_DECAY = {'rpb': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}
SHRINK = 8


def load(name):
    return Config.fromfile(str(CONFIG_DIR / f'{name}.py'))


def test_every_config_is_covered():
    shipped = {str(p.relative_to(CONFIG_DIR).with_suffix(''))
               for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts}
    assert shipped == set(PUBLISHED) | set(DEMO_CONFIGS)


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_published_recipe(name):
    cfg, expected = load(name), PUBLISHED[name]
    assert cfg.custom_imports == dict(imports=['nat_mm'], allow_failed_imports=False)
    backbone = cfg.model.backbone
    assert backbone.type == 'NAT' and backbone.arch == expected['arch']
    assert backbone.kernel_size == 7
    assert backbone.drop_path_rate == expected['drop_path']
    assert backbone.get('dilations') == expected['dilations']
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=expected['checkpoint'])

    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper'
    assert optim.get('constructor', 'DefaultOptimWrapperConstructor') == \
        'DefaultOptimWrapperConstructor'
    assert optim.paramwise_cfg == dict(custom_keys=NO_DECAY)
    assert optim.optimizer.type == 'AdamW' and optim.optimizer.betas == (0.9, 0.999)
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.batch_size * 8 == 16  # 8 GPUs x 2 images
    warmup, decay = cfg.param_scheduler

    if cfg.default_scope == 'mmseg':
        assert (optim.optimizer.lr, optim.optimizer.weight_decay) == (6e-5, 0.01)
        assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 160000
        assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 1e-6, 1500)
        assert (decay.type, decay.power, decay.eta_min, decay.begin, decay.end) == \
            ('PolyLR', 1.0, 0.0, 1500, 160000)
        assert cfg.crop_size == (512, 512)
        head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
        assert (head.type, head.channels, head.pool_scales, head.num_classes) == \
            ('UPerHead', 512, (1, 2, 3, 6), 150)
        assert (aux.type, aux.in_index, aux.channels, aux.loss_decode.loss_weight) == \
            ('FCNHead', 2, 256, 0.4)
    else:
        assert (optim.optimizer.lr, optim.optimizer.weight_decay) == (1e-4, 0.05)
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
            elif key == 'scales':
                node[key] = [tuple(v // SHRINK for v in scale) for scale in value]
            else:
                _shrink(value)
    elif isinstance(node, list):
        for value in node:
            _shrink(value)


@pytest.fixture(scope='module')
def data_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    return dict(
        mmseg=generate_ade20k_like(root / 'ade', num_train=2, num_val=1, image_size=(64, 64)),
        mmdet=generate_coco_like(root / 'coco', num_train=2, num_val=1, image_size=(64, 96)))


def _fewer_rois(model_cfg):
    """Sample and keep fewer regions of interest: the RoI heads' cost grows with their number."""
    train, test = model_cfg.train_cfg, model_cfg.test_cfg
    train.rpn_proposal.max_per_img = 64
    test.rpn.max_per_img = 32
    test.rcnn.max_per_img = 10
    for stage in train.rcnn if isinstance(train.rcnn, list) else [train.rcnn]:
        stage.sampler.num = 32


def _shrink_for_cpu(cfg, data_root):
    """Point the config at generated data; smaller images (and fewer RoIs), same model."""
    for split in ('train', 'val'):
        dataset = cfg[f'{split}_dataloader'].dataset
        dataset.data_root = data_root
        if cfg.default_scope == 'mmdet':  # the generated COCO categories
            dataset.metainfo = dict(classes=SHAPE_CLASSES)
    _shrink(cfg.train_dataloader.dataset.pipeline)
    _shrink(cfg.val_dataloader.dataset.pipeline)
    _shrink(cfg.model.data_preprocessor)
    if cfg.default_scope == 'mmdet':
        _fewer_rois(cfg.model)


@pytest.mark.parametrize('name', sorted(PUBLISHED) + list(DEMO_CONFIGS))
def test_build_loss_and_predict(name, data_roots):
    cfg = load(name)
    models, datasets = _registries(cfg)
    cfg.model.backbone.init_cfg = None
    _shrink_for_cpu(cfg, data_roots[cfg.default_scope])
    # as the Runner does in a single process
    model = revert_sync_batchnorm(models.build(cfg.model))
    if name in PUBLISHED:
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params_m - PUBLISHED[name]['params_m']) < 1.0, params_m

    train_set = datasets.build(cfg.train_dataloader.dataset)
    batch = model.data_preprocessor(pseudo_collate([train_set[0], train_set[1]]), training=True)
    model.train()
    loss, log_vars = model.parse_losses(model(**batch, mode='loss'))
    assert torch.isfinite(loss) and loss > 0
    assert any('loss_mask' in key or 'decode.loss_ce' in key for key in log_vars)

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
    else:
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
