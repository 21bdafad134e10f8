"""The whole NAT / DiNAT classifier in MMPretrain (ImageClassifier + NAT + GlobalAveragePooling +
LinearClsHead): its logits and pooled features equal Transformers' classifier on NATTEN
(tests/data/hf/*/golden.pt, float64), loaded from Hub folders, official-layout files and
MMEngine checkpoints, through the model-level Pretrained init_cfg and through ``load_from``;
checkpoints that do not fit stop with what to do."""
import json
from pathlib import Path

import pytest
import torch
from mmengine.model import BaseModule
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from safetensors.torch import load_file

import nat_mm  # noqa: F401  (registers NAT and the Pretrained initializer)
from nat_mm.launch.classifier_runner import ClassifierRunner
from nat_mm.models import CheckpointError
from nat_mm.models.checkpoint import nat_arguments

HF_DATA = Path(__file__).resolve().parents[1] / 'data' / 'hf'
FOLDERS = ('nat_k7', 'dinat_k7', 'dinat_k11')
NUM_CLASSES = 10
WIDTH = 128  # the last stage's channels of the three golden models


@pytest.fixture(scope='module', autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


def classifier_cfg(folder, num_classes=NUM_CLASSES, init_cfg=None, backbone_init_cfg=None):
    """The MMPretrain config of the golden model in ``folder`` (its Transformers config.json)."""
    arguments = nat_arguments(json.loads((HF_DATA / folder / 'config.json').read_text()))
    return dict(
        type='ImageClassifier',
        backbone=dict(type='NAT', out_indices=(3, ), init_cfg=backbone_init_cfg, **arguments),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=WIDTH),
        init_cfg=init_cfg)


def build(folder, **kwargs):
    model = MODELS.build(classifier_cfg(folder, **kwargs))
    model.init_weights()
    return model


def golden(folder):
    return torch.load(HF_DATA / folder / 'golden.pt', weights_only=True)


def assert_matches_golden(model, folder):
    """Logits and pooled features in float64 equal Transformers + NATTEN's to 1e-9."""
    data = golden(folder)
    model = model.double().eval()
    with torch.no_grad():
        logits = model(data['input'], mode='tensor')
        (pooled, ) = model.extract_feat(data['input'], stage='neck')
    torch.testing.assert_close(pooled, data['pooled'], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(logits, data['logits'], rtol=1e-9, atol=1e-12)


def official_layout(folder):
    """The Hub folder's weights renamed by hand into the official classifier's names
    (backbone keys, ``norm.*``, ``head.*``), independently of nat_mm's conversion: the
    Transformers names are rewritten with the table of the official / Transformers layouts."""
    hub = load_file(str(HF_DATA / folder / 'model.safetensors'))
    prefix = 'nat.' if folder.startswith('nat') else 'dinat.'
    official = {}
    for key, value in hub.items():
        key = key[len(prefix):] if key.startswith(prefix) else key
        if key.startswith('classifier.'):
            official['head.' + key.split('.', 1)[1]] = value
        elif key.startswith('layernorm.'):
            official['norm.' + key.split('.', 1)[1]] = value
        elif key.startswith('embeddings.patch_embeddings.projection.'):
            official['patch_embed.proj.' + key.split('projection.', 1)[1]] = value
        elif key.startswith('embeddings.norm.'):
            official['patch_embed.norm.' + key.split('norm.', 1)[1]] = value
        elif '.downsample.' in key:
            official[key[len('encoder.'):]] = value
        else:
            _, _, level, _, layer, rest = key.split('.', 5)
            block = f'levels.{level}.blocks.{layer}.'
            names = {'layernorm_before': 'norm1', 'layernorm_after': 'norm2',
                     'attention.output.dense': 'attn.proj', 'intermediate.dense': 'mlp.fc1',
                     'output.dense': 'mlp.fc2'}
            module, _, param = rest.rpartition('.')
            if rest == 'attention.self.rpb':
                official[block + 'attn.rpb'] = value
            elif rest == 'layer_scale_parameters':
                official[block + 'gamma1'], official[block + 'gamma2'] = value
            elif module.startswith('attention.self.'):
                official.setdefault(block + 'attn.qkv.' + param, {})[module[15:]] = value
            else:
                official[block + names[module] + '.' + param] = value
    return {key: torch.cat([value[name] for name in ('query', 'key', 'value')])
            if isinstance(value, dict) else value for key, value in official.items()}


@pytest.fixture(scope='module')
def official_files(tmp_path_factory):
    """folder -> an official-layout .pth of its weights."""
    root = tmp_path_factory.mktemp('official')
    files = {}
    for folder in FOLDERS:
        files[folder] = root / f'{folder}.pth'
        torch.save(official_layout(folder), files[folder])
    return files


@pytest.mark.parametrize('folder', FOLDERS)
def test_hub_folder_through_model_init_cfg_equals_transformers(folder):
    model = build(folder, init_cfg=dict(type='Pretrained', checkpoint=str(HF_DATA / folder)))
    assert_matches_golden(model, folder)


@pytest.mark.parametrize('folder', FOLDERS)
def test_official_file_through_load_from_equals_transformers(folder, official_files, tmp_path):
    runner = ClassifierRunner(model=classifier_cfg(folder), work_dir=str(tmp_path),
                              load_from=str(official_files[folder]), default_scope='mmpretrain')
    runner.load_or_resume()
    assert_matches_golden(runner.model, folder)


def test_official_file_and_safetensors_file_through_init_cfg(official_files):
    for checkpoint in (official_files['dinat_k7'], HF_DATA / 'dinat_k7' / 'model.safetensors'):
        model = build('dinat_k7', init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
        assert_matches_golden(model, 'dinat_k7')


def test_mmengine_checkpoint_of_the_classifier_resumes_its_meta(tmp_path):
    """A checkpoint MMEngine saved from the classifier (``backbone.*``, ``head.fc.*``, meta)
    loads through load_from, and the Runner gets its meta back (what ``--resume`` reads)."""
    trained = build('nat_k7', init_cfg=dict(type='Pretrained', checkpoint=str(HF_DATA / 'nat_k7')))
    path = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1, 'iter': 5}, 'state_dict': trained.state_dict()}, path)
    runner = ClassifierRunner(model=classifier_cfg('nat_k7'), work_dir=str(tmp_path / 'run'),
                              load_from=str(path), default_scope='mmpretrain')
    checkpoint = runner.load_checkpoint(str(path))
    assert checkpoint['meta'] == {'epoch': 1, 'iter': 5}
    assert checkpoint['state_dict'].keys() == trained.state_dict().keys()
    assert_matches_golden(runner.model, 'nat_k7')


def test_wrong_number_of_classes_names_both_and_the_fixes():
    with pytest.raises(CheckpointError) as error:
        build('nat_k7', num_classes=7,
              init_cfg=dict(type='Pretrained', checkpoint=str(HF_DATA / 'nat_k7')))
    message = str(error.value)
    assert 'a 10-class head' in message and 'has 7 classes' in message
    assert 'model.head.num_classes=10' in message and 'head=False' in message


def test_head_false_loads_backbone_and_final_norm_only():
    """What fine-tuning for other classes uses (e.g. from the ImageNet-22k DiNAT-L)."""
    model = build('dinat_k7', num_classes=7,
                  init_cfg=dict(type='Pretrained', checkpoint=str(HF_DATA / 'dinat_k7'),
                                head=False))
    reference = build('dinat_k7', init_cfg=dict(type='Pretrained',
                                                checkpoint=str(HF_DATA / 'dinat_k7')))
    data = golden('dinat_k7')
    with torch.no_grad():
        (pooled, ) = model.double().eval().extract_feat(data['input'], stage='neck')
    torch.testing.assert_close(pooled, data['pooled'], rtol=1e-9, atol=1e-12)
    assert model.head.fc.weight.shape == (7, WIDTH)
    assert not torch.equal(model.head.fc.weight[:7].double(),
                           reference.head.fc.weight[:7].double())


def detection_checkpoint(tmp_path):
    """A detector's checkpoint of the golden backbone: ``backbone.*`` with the output norms of
    all four levels, a neck, no classification head."""
    backbone = MODELS.build(dict(classifier_cfg('nat_k7')['backbone'], out_indices=(0, 1, 2, 3)))
    state = {f'backbone.{key}': value for key, value in backbone.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(4, 16, 1, 1)
    path = tmp_path / 'mask_rcnn.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)
    return path, backbone


@pytest.mark.parametrize('through', ['init_cfg', 'load_from'])
def test_detection_checkpoint_says_the_head_is_missing_and_how_to_load_the_backbone(
        through, tmp_path):
    path, _ = detection_checkpoint(tmp_path)
    with pytest.raises(CheckpointError) as error:
        if through == 'init_cfg':
            build('nat_k7', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        else:
            ClassifierRunner(model=classifier_cfg('nat_k7'), work_dir=str(tmp_path / 'run'),
                             load_from=str(path), default_scope='mmpretrain').load_or_resume()
    message = str(error.value)
    assert str(path) in message and 'no classification head' in message
    assert ("backbone=dict(init_cfg=dict(type='Pretrained', checkpoint="
            f"{str(path)!r}, prefix='backbone.'))") in message


def test_the_fix_of_that_message_loads_the_detector_backbone(tmp_path):
    """The backbone's init_cfg takes the detector's backbone; its output norms of the levels
    the classifier does not output (norm0..norm2) are left out, norm3 loads."""
    path, detector_backbone = detection_checkpoint(tmp_path)
    model = build('nat_k7', backbone_init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                   prefix='backbone.'))
    loaded = model.backbone.state_dict()
    expected = detector_backbone.state_dict()
    assert loaded.keys() < expected.keys()
    for key, value in loaded.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_other_modules_keep_mmengines_pretrained(tmp_path):
    """The Pretrained override changes nothing for a module that is not a NAT classifier:
    MMEngine's loader, by key names, non-strict."""

    class Probe(BaseModule):
        def __init__(self, init_cfg=None):
            super().__init__(init_cfg=init_cfg)
            self.fc = torch.nn.Linear(3, 2)

    weights = {'fc.weight': torch.arange(6.).view(2, 3), 'fc.bias': torch.tensor([1., 2.])}
    torch.save(weights, tmp_path / 'probe.pth')
    probe = Probe(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'probe.pth')))
    probe.init_weights()
    torch.testing.assert_close(probe.fc.weight, weights['fc.weight'])
    torch.testing.assert_close(probe.fc.bias, weights['fc.bias'])
    with pytest.raises(ValueError, match=r'head=False\) applies to a classifier with a NAT'):
        Probe(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'probe.pth'),
                            head=False)).init_weights()


def test_backbone_outputting_other_levels_is_refused_with_the_setting():
    cfg = classifier_cfg('nat_k7', init_cfg=dict(type='Pretrained',
                                                 checkpoint=str(HF_DATA / 'nat_k7')))
    cfg['backbone']['out_indices'] = (2, 3)
    cfg['neck'] = dict(type='GlobalAveragePooling')
    model = MODELS.build(cfg)
    with pytest.raises(CheckpointError, match=r'set model\.backbone\.out_indices=\(3,\)'):
        model.init_weights()


def test_loading_logs_what_was_loaded(logged):
    build('nat_k7', init_cfg=dict(type='Pretrained', checkpoint=str(HF_DATA / 'nat_k7')))
    assert any('NAT classifier: loaded' in line and '10-class head' in line for line in logged)
