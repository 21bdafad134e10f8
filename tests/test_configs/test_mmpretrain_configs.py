"""Every MMPretrain classification config (configs/mmpretrain/): loads through MMPretrain's own
base configs, follows the published recipe, and builds the published classifier at its
published size (on the meta device)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from nat_mm import NAT
from nat_mm.models.presets import DILATIONS_224, DILATIONS_224_MINI, DILATIONS_384

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'mmpretrain'


def _published(arch, params_m, dilations=None, layer_scale=None, drop_path=None,
               kernel_size=7, resolution=224, init=None):
    return dict(arch=arch, params_m=params_m, dilations=dilations, layer_scale=layer_scale,
                drop_path=drop_path, kernel_size=kernel_size, resolution=resolution, init=init)


#: config -> the published classifier (official classification code and model pages): arch,
#: parameters (millions, as published: rounded), dilations, layer scale (None: none).
PUBLISHED = {
    'nat/nat-mini_8xb128_in1k': _published('mini', 20, drop_path=0.2),
    'nat/nat-tiny_8xb128_in1k': _published('tiny', 28, drop_path=0.2),
    'nat/nat-small_8xb128_in1k': _published('small', 51, layer_scale=1e-5, drop_path=0.3),
    'nat/nat-base_8xb128_in1k': _published('base', 90, layer_scale=1e-5, drop_path=0.5),
    'dinat/dinat-mini_8xb128_in1k': _published('mini', 20, DILATIONS_224_MINI, drop_path=0.2),
    'dinat/dinat-tiny_8xb128_in1k': _published('tiny', 28, DILATIONS_224, drop_path=0.2),
    'dinat/dinat-small_8xb128_in1k': _published('small', 51, DILATIONS_224, drop_path=0.3),
    'dinat/dinat-base_8xb128_in1k': _published('base', 90, DILATIONS_224, layer_scale=1e-5,
                                               drop_path=0.5),
    'dinat/dinat-large_in22k-pre_8xb64_in1k': _published(
        'large', 200, DILATIONS_224, drop_path=0.35,
        init='checkpoints/dinat_large_in22k_224.pth'),
    'dinat/dinat-large_in22k-pre_8xb64_in1k-384px': _published(
        'large', 200, DILATIONS_384, drop_path=0.35, resolution=384,
        init='checkpoints/dinat_large_in22k_224.pth'),
    'dinat/dinat-large-k11_in22k-pre_8xb64_in1k-384px': _published(
        'large', 200, DILATIONS_224, drop_path=0.35, kernel_size=11, resolution=384,
        init='checkpoints/dinat_large_in22k_224_11x11interp.pth'),
}
#: The published sizes are whole millions (20M, 28M, 51M, 90M, 200M): the built models are
#: within 0.08% (mini) to 0.5% (small, DiNAT-L) of them, and equal, to the parameter, the count
#: from the architecture table (:func:`count_from_table`).
PUBLISHED_REL = 0.01

#: embed_dim, depths, heads, mlp ratio of the published archs (NAT_ZOO.md).
TABLE = {'mini': (64, (3, 4, 6, 5), (2, 4, 8, 16), 3),
         'tiny': (64, (3, 4, 18, 5), (2, 4, 8, 16), 3),
         'small': (96, (3, 4, 18, 5), (3, 6, 12, 24), 2),
         'base': (128, (3, 4, 18, 5), (4, 8, 16, 32), 2),
         'large': (192, (3, 4, 18, 5), (6, 12, 24, 48), 2)}


def count_from_table(arch, kernel_size, layer_scale, classes=1000):
    """Parameters of the official classifier, layer by layer: conv tokenizer (3x3 convs to C/2
    and C, LayerNorm), per block LayerNorm, qkv, rpb (heads, 2K-1, 2K-1), proj, LayerNorm, MLP,
    layer scales; 3x3 downsamplers without bias + LayerNorm; final LayerNorm; linear head."""
    embed, depths, heads, mlp = TABLE[arch]
    total = 3 * embed // 2 * 9 + embed // 2 + embed // 2 * embed * 9 + embed + 2 * embed
    for level, (depth, head_count) in enumerate(zip(depths, heads)):
        dim = embed * 2 ** level
        hidden = int(dim * mlp)
        block = (2 * dim + 3 * dim * dim + 3 * dim + head_count * (2 * kernel_size - 1) ** 2
                 + dim * dim + dim + 2 * dim + dim * hidden + hidden + hidden * dim + dim
                 + (2 * dim if layer_scale else 0))
        total += depth * block
        if level < len(depths) - 1:
            total += 2 * dim * dim * 9 + 2 * 2 * dim
    return total + 2 * 8 * embed + 8 * embed * classes + classes


def load(name):
    return Config.fromfile(CONFIG_DIR / f'{name}.py')


def test_every_config_is_checked():
    shipped = {str(path.relative_to(CONFIG_DIR).with_suffix(''))
               for path in CONFIG_DIR.glob('*/*.py') if path.parent.name != '_base_'}
    assert shipped == set(PUBLISHED)


@pytest.fixture(scope='module', autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_published_classifier_at_published_size(name):
    """Built through MMPretrain's registry on the meta device (shapes without memory):
    ImageClassifier, the variant's NAT outputting the last stage only, average pooling and a
    1000-class linear head on 8 x embed_dim channels."""
    cfg = load(name)
    published = PUBLISHED[name]
    cfg.model.init_cfg = None
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'ImageClassifier'
    assert type(model.backbone) is NAT and model.backbone.out_indices == (3, )
    assert type(model.neck).__name__ == 'GlobalAveragePooling'
    width = model.backbone.num_features[-1]
    assert model.head.fc.in_features == width and model.head.fc.out_features == 1000
    assert model.backbone.kernel_size == published['kernel_size']
    expected_dilations = published['dilations'] or [[1] * d for d in model.backbone.arch_settings[
        'depths']]
    assert model.backbone.dilations == expected_dilations
    assert model.backbone.arch_settings['layer_scale'] == published['layer_scale']
    assert model.backbone.arch_settings['drop_path_rate'] == published['drop_path']
    params = sum(p.numel() for p in model.parameters())
    assert params == count_from_table(published['arch'], published['kernel_size'],
                                      published['layer_scale'])
    assert params / 1e6 == pytest.approx(published['params_m'], rel=PUBLISHED_REL)


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_published_recipe(name):
    cfg = load(name)
    published = PUBLISHED[name]
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and optimizer.betas == (0.9, 0.999)
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=5.0)
    paramwise = cfg.optim_wrapper.paramwise_cfg
    assert paramwise.custom_keys == {'.rpb': dict(decay_mult=0.0)}
    assert paramwise.norm_decay_mult == paramwise.bias_decay_mult == 0.0
    assert paramwise.flat_decay_mult == 0.0  # layer scales
    assert cfg.runner_type == 'ClassifierRunner'
    assert (cfg.test_evaluator.type, cfg.test_evaluator.topk) == ('Accuracy', (1, 5))
    test_pipeline = [step.type for step in cfg.test_dataloader.dataset.pipeline]
    if published['resolution'] == 224:  # resize 256 (short edge), centre crop 224
        assert test_pipeline == ['LoadImageFromFile', 'ResizeEdge', 'CenterCrop', 'PackInputs']
        assert cfg.test_dataloader.dataset.pipeline[2].crop_size == 224
    else:  # crop_pct 1.0
        assert test_pipeline == ['LoadImageFromFile', 'Resize', 'PackInputs']
        assert cfg.test_dataloader.dataset.pipeline[1].scale == published['resolution']
    schedulers = cfg.param_scheduler
    if published['init'] is None:  # from scratch, 300 (+10) epochs
        total_batch = 8 * cfg.train_dataloader.batch_size
        assert (total_batch, optimizer.lr, optimizer.weight_decay) == (1024, 1e-3, 0.05)
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert [s.type for s in schedulers] == ['LinearLR', 'CosineAnnealingLR']
        assert optimizer.lr * schedulers[0].start_factor == pytest.approx(1e-6)
        assert (schedulers[0].end, schedulers[1].end, schedulers[1].eta_min) == (20, 300, 5e-6)
        assert cfg.train_cfg.max_epochs == 310
        assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
    else:  # ImageNet-22k -> 1k fine-tuning, 30 epochs, fp32
        assert cfg.train_dataloader.batch_size == 64 and optimizer.lr == 5e-5
        assert optimizer.weight_decay == (1e-4 if published['resolution'] == 224 else 1e-10)
        assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'
        assert [(s.type, s.start_factor, s.end_factor, s.end) for s in schedulers] == [
            ('LinearLR', 1.0, 0.0, 30)]
        assert cfg.train_cfg.max_epochs == 30 and not cfg.model.train_cfg
        assert cfg.model.init_cfg == dict(type='Pretrained', checkpoint=published['init'],
                                          head=False)
    assert cfg.model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                                       mode='original')


def test_full_width_classifier_trains_and_predicts_through_its_pipelines(tmp_path):
    """NAT-Mini at full width through the config's own pipelines (RandAugment, random erasing,
    the data preprocessor's Mixup / CutMix; resize 256 + centre crop 224) on two generated
    images: a finite loss with gradients for every parameter, 1000 normalised scores."""
    from mmengine.dataset import Compose, pseudo_collate
    from PIL import Image
    cfg = load('nat/nat-mini_8xb128_in1k')
    rng = np.random.default_rng(0)
    paths = []
    for index in range(2):
        paths.append(str(tmp_path / f'{index}.JPEG'))
        Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(paths[-1])
    cfg.model.data_preprocessor = cfg.data_preprocessor
    model = MODELS.build(cfg.model)
    model.init_weights()

    train = Compose(cfg.train_dataloader.dataset.pipeline)
    batch = pseudo_collate([train(dict(img_path=path, gt_label=label))
                            for label, path in enumerate(paths)])
    data = model.data_preprocessor(batch, training=True)
    assert data['inputs'].shape == (2, 3, 224, 224)
    losses = model.loss(data['inputs'], data['data_samples'])
    losses['loss'].backward()
    assert torch.isfinite(losses['loss'])
    assert all(p.grad is not None for p in model.parameters())

    test = Compose(cfg.test_dataloader.dataset.pipeline)
    batch = pseudo_collate([test(dict(img_path=path)) for path in paths])
    data = model.data_preprocessor(batch, training=False)
    with torch.no_grad():
        predictions = model.predict(data['inputs'], data['data_samples'])
    scores = torch.stack([p.pred_score for p in predictions])
    assert scores.shape == (2, 1000)
    torch.testing.assert_close(scores.sum(1), torch.ones(2))
