"""Hugging Face Hub checkpoints (Transformers' layout) load into NAT and give Transformers +
NATTEN 0.17.5's numbers (tests/data/hf, see tests/data/README.md)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nat_mm import NAT
from nat_mm.models.checkpoint import (CheckpointError, detect_layout, from_transformers_layout,
                                      load_pretrained, nat_arguments)
from nat_mm.models.presets import DILATIONS_224, DILATIONS_M2F

HF_DATA = Path(__file__).resolve().parents[1] / 'data' / 'hf'
FOLDERS = ('nat_k7', 'dinat_k7', 'dinat_k11')


def golden(folder):
    return torch.load(HF_DATA / folder / 'golden.pt', weights_only=True)


def config_of(folder):
    return json.loads((HF_DATA / folder / 'config.json').read_text())


def pretrained(path, **options):
    return dict(type='Pretrained', checkpoint=str(path), **options)


def features(model, data):
    """The four feature maps of ``model`` on golden.pt's input, in float64, with golden.pt's
    backbone output norms (Transformers' hidden_states_norms.stage{k} = nat_mm's norm{k-1})."""
    norms, _ = from_transformers_layout(data['backbone_norms'])
    assert sorted(norms) == sorted(f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    model.load_state_dict(norms, strict=False)
    model = model.double().eval()
    with torch.no_grad():
        return model(data['input'])


def assert_golden(outputs, data):
    assert len(outputs) == len(data['feature_maps']) == 4
    for output, expected in zip(outputs, data['feature_maps']):
        assert output.dtype == expected.dtype == torch.float64
        torch.testing.assert_close(output, expected, rtol=1e-9, atol=0)


def test_model_is_configured_like_config_json():
    """The settings README of tests/data/hf describes, read by nat_arguments."""
    assert nat_arguments(config_of('nat_k7')) == dict(
        arch=dict(embed_dim=16, depths=[2, 1, 2, 1], num_heads=[2, 2, 4, 4], mlp_ratio=3.),
        kernel_size=7, dilations=None, layer_scale=False, in_channels=3, qkv_bias=True)
    dinat_k7 = nat_arguments(config_of('dinat_k7'))
    assert dinat_k7['dilations'] == [[1, 4], [1, 2], [1, 1], [1]]
    assert dinat_k7['layer_scale'] == 0.01
    dinat_k11 = nat_arguments(config_of('dinat_k11'))
    assert (dinat_k11['kernel_size'], dinat_k11['dilations']) == (11, [[2], [1, 1], [1], [1]])


@pytest.mark.parametrize('folder', FOLDERS)
def test_hub_folder_gives_transformers_natten_feature_maps(folder):
    """init_cfg naming the Hub folder; float64 equal to Transformers + NATTEN to 1e-9."""
    data = golden(folder)
    model = NAT(**nat_arguments(config_of(folder)), init_cfg=pretrained(HF_DATA / folder))
    model.init_weights()
    assert_golden(features(model, data), data)


def test_hub_layout_renames_every_tensor():
    """q, k, v stacked into qkv; the (2, C) layer scale split into gamma1 / gamma2; the
    classifier's final LayerNorm and head dropped."""
    raw = load_file(HF_DATA / 'dinat_k7' / 'model.safetensors')
    assert detect_layout(raw).transformers
    converted, dropped = from_transformers_layout(raw)
    assert sorted(dropped) == ['classifier.bias', 'classifier.weight', 'dinat.layernorm.bias',
                               'dinat.layernorm.weight']
    layer = 'dinat.encoder.levels.1.layers.0.'
    block = 'levels.1.blocks.0.'
    assert torch.equal(converted[block + 'attn.qkv.weight'], torch.cat(
        [raw[layer + f'attention.self.{name}.weight'] for name in ('query', 'key', 'value')]))
    assert torch.equal(converted[block + 'gamma1'], raw[layer + 'layer_scale_parameters'][0])
    assert torch.equal(converted[block + 'gamma2'], raw[layer + 'layer_scale_parameters'][1])
    assert torch.equal(converted[block + 'mlp.fc2.weight'], raw[layer + 'output.dense.weight'])
    model = NAT(**nat_arguments(config_of('dinat_k7')))
    assert set(converted) == set(model.state_dict()) - {
        f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')}


@pytest.mark.parametrize('form', ['safetensors_alone', 'bin_folder', 'bin_alone', 'prefixed'])
def test_other_hub_forms(tmp_path, form):
    """model.safetensors alone; a folder with pytorch_model.bin (read by the weights-only
    loader); that file alone; a state dict saved by a training wrapper ('module.')."""
    folder = 'nat_k7'
    data = golden(folder)
    raw = load_file(HF_DATA / folder / 'model.safetensors')
    if form == 'safetensors_alone':
        path = tmp_path / 'nat.safetensors'
        shutil.copy(HF_DATA / folder / 'model.safetensors', path)
    elif form in ('bin_folder', 'bin_alone'):
        shutil.copy(HF_DATA / folder / 'config.json', tmp_path / 'config.json')
        torch.save(raw, tmp_path / 'pytorch_model.bin')
        path = tmp_path if form == 'bin_folder' else tmp_path / 'pytorch_model.bin'
    else:
        path = tmp_path / 'wrapped.pth'
        torch.save({'state_dict': {f'module.{k}': v for k, v in raw.items()}}, path)
    model = NAT(**nat_arguments(config_of(folder)), init_cfg=pretrained(path))
    model.init_weights()
    assert_golden(features(model, data), data)


def test_hub_backbone_checkpoint_brings_its_output_norms(tmp_path):
    """A NatBackbone's own state dict: no prefix, hidden_states_norms.stage{k} -> norm{k-1}."""
    data = golden('dinat_k11')
    raw = load_file(HF_DATA / 'dinat_k11' / 'model.safetensors')
    backbone = {key[len('dinat.'):]: value for key, value in raw.items()
                if key.startswith('dinat.') and not key.startswith('dinat.layernorm.')}
    backbone.update(data['backbone_norms'])
    save_file(backbone, tmp_path / 'model.safetensors')
    shutil.copy(HF_DATA / 'dinat_k11' / 'config.json', tmp_path / 'config.json')
    model = NAT(**nat_arguments(config_of('dinat_k11')), init_cfg=pretrained(tmp_path))
    model.init_weights()
    model = model.double().eval()
    with torch.no_grad():
        assert_golden(model(data['input']), data)


def _damaged_folder(tmp_path, folder, drop=(), config_changes=None):
    target = tmp_path / folder
    shutil.copytree(HF_DATA / folder, target)
    if drop:
        raw = load_file(target / 'model.safetensors')
        save_file({k: v for k, v in raw.items() if k not in drop}, target / 'model.safetensors')
    if config_changes:
        config = json.loads((target / 'config.json').read_text())
        config.update(config_changes)
        (target / 'config.json').write_text(json.dumps(config))
    return target


def assert_unchanged(model, before):
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f'{key} changed by a refused load'


def test_missing_key_names_nat_mm_and_transformers_names(tmp_path):
    path = _damaged_folder(tmp_path, 'dinat_k7',
                           drop=['dinat.encoder.levels.1.layers.0.intermediate.dense.weight'])
    model = NAT(**nat_arguments(config_of('dinat_k7')))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_pretrained(model, str(path))
    message = str(error.value)
    assert f"checkpoint '{path / 'model.safetensors'}' does not match the model" in message
    assert ('it lacks 1 tensors (levels.1.blocks.0.mlp.fc1.weight; in Transformers\' names: '
            'encoder.levels.1.layers.0.intermediate.dense.weight)') in message
    assert message.endswith('(Pass strict=False in the Pretrained init_cfg to load the matching '
                            'part anyway.)')
    assert_unchanged(model, before)


def test_missing_query_names_the_qkv_split(tmp_path):
    path = _damaged_folder(tmp_path, 'nat_k7',
                           drop=['nat.encoder.levels.2.layers.1.attention.self.key.bias'])
    model = NAT(**nat_arguments(config_of('nat_k7')))
    with pytest.raises(CheckpointError) as error:
        load_pretrained(model, str(path))
    message = str(error.value)
    assert ("lacks 1 tensors (levels.2.blocks.1.attn.qkv.bias; in Transformers' names: "
            'encoder.levels.2.layers.1.attention.self.{query,key,value}.bias)') in message
    assert ('has 2 unknown tensors (nat.encoder.levels.2.layers.1.attention.self.query.bias, '
            'nat.encoder.levels.2.layers.1.attention.self.value.bias)') in message


@pytest.mark.parametrize('changes, expected', [
    (dict(num_heads=[2, 2, 4, 8]),
     "config.json has num_heads=[2, 2, 4, 8], the model has num_heads=[2, 2, 4, 4]: set "
     "num_heads=[2, 2, 4, 8]"),
    (dict(embed_dim=24, mlp_ratio=4.0),
     "config.json has embed_dim=24, the model has embed_dim=16: set embed_dim=24; config.json "
     "has mlp_ratio=4.0, the model has mlp_ratio=2.0: set mlp_ratio=4.0"),
    (dict(layer_scale_init_value=0.0),
     "config.json has layer_scale_init_value=0.0 (layer scale off), the model has "
     "layer_scale=0.01: set layer_scale=False"),
    (dict(patch_size=2),
     "config.json has patch_size=2; nat_mm's NAT has 4 and cannot be configured otherwise"),
])
def test_config_that_disagrees_names_both_values_and_the_argument(tmp_path, changes, expected):
    path = _damaged_folder(tmp_path, 'dinat_k7', config_changes=changes)
    model = NAT(**nat_arguments(config_of('dinat_k7')), init_cfg=pretrained(path))
    with pytest.raises(CheckpointError) as error:
        model.init_weights()
    message = str(error.value)
    assert message.startswith(f"checkpoint '{path / 'model.safetensors'}' does not fit the model: ")
    assert expected in message
    assert 'Set these NAT arguments in the backbone config (model.backbone)' in message


def test_broken_config_json_is_named(tmp_path):
    path = _damaged_folder(tmp_path, 'nat_k7')
    (path / 'config.json').write_text('{"embed_dim": 16,')
    with pytest.raises(CheckpointError, match=r"config\.json' is not a readable Transformers "
                                              r'config \(JSONDecodeError: '):
        load_pretrained(NAT(**nat_arguments(config_of('nat_k7'))), str(path))


def test_kernel_size_and_dilations_may_differ(tmp_path, logged):
    """The detection / segmentation use: other dilations load silently; another kernel size
    resizes the rpb tables (as for official files); NAT weights into a DiNAT get a note."""
    arguments = nat_arguments(config_of('dinat_k7'))
    model = NAT(**dict(arguments, dilations=[[2, 1], [1, 1], [1, 1], [1]]),
                init_cfg=pretrained(HF_DATA / 'dinat_k7'))
    model.init_weights()
    assert not [line for line in logged if 'resized' in line or 'dilations' in line]
    model = NAT(**dict(arguments, kernel_size=5), init_cfg=pretrained(HF_DATA / 'dinat_k7'))
    model.init_weights()
    nat = NAT(**dict(nat_arguments(config_of('nat_k7')), dilations=[[2, 1], [1], [1, 1], [1]]),
              init_cfg=pretrained(HF_DATA / 'nat_k7'))
    nat.init_weights()
    assert [line for line in logged if 'resized' in line] == [
        "NAT: resized 7 relative position bias tables (bicubic) from 13x13 (kernel 7) in the "
        "checkpoint to the model's 9x9 (kernel 5)"]
    notes = [line for line in logged if 'trained' in line]
    assert len(notes) == 1 and "nat_k7/model.safetensors' was trained without dilations" in \
        notes[0] and 'the model has dilations=[[2, 1], [1], [1, 1], [1]]' in notes[0]


def to_transformers_layout(state_dict, prefix):
    """nat_mm's names -> Transformers' (the inverse of the loader's renaming), for test files."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith('norm'):
            continue
        parts = key.split('.')
        if key.startswith('patch_embed.proj.'):
            renamed['embeddings.patch_embeddings.projection.' + '.'.join(parts[2:])] = value
        elif key.startswith('patch_embed.norm.'):
            renamed['embeddings.norm.' + parts[-1]] = value
        elif '.downsample.' in key:
            renamed['encoder.' + key] = value
        else:
            layer = f'encoder.levels.{parts[1]}.layers.{parts[3]}.'
            rest = '.'.join(parts[4:])
            if rest.startswith('attn.qkv.'):
                for name, chunk in zip(('query', 'key', 'value'), value.chunk(3)):
                    renamed[f'{layer}attention.self.{name}.{parts[-1]}'] = chunk
            else:
                hub = {'attn.rpb': 'attention.self.rpb', 'norm1': 'layernorm_before',
                       'norm2': 'layernorm_after', 'attn.proj': 'attention.output.dense',
                       'mlp.fc1': 'intermediate.dense', 'mlp.fc2': 'output.dense'}
                module, _, param = rest.rpartition('.')
                renamed[layer + (hub[rest] if rest in hub else f'{hub[module]}.{param}')] = value
    return {prefix + key: value.contiguous() for key, value in renamed.items()}


#: A narrower DiNAT-L (DiNAT-L's depths and mlp ratio, no layer scale): the Mask2Former
#: backbone config with this arch is the real one but for its widths.
NARROW_LARGE = dict(embed_dim=24, depths=(3, 4, 18, 5), num_heads=(1, 2, 4, 8), mlp_ratio=2.)


def mask2former_backbone(checkpoint):
    """configs/_base_/mask2former_dinat_large.py's backbone (kernel 11, the m2f dilations) at
    NARROW_LARGE's widths, loading ``checkpoint``."""
    from mmengine.config import Config
    config = Config.fromfile(Path(__file__).resolve().parents[2] / 'configs' / '_base_' /
                             'mask2former_dinat_large.py').dinat_m2f_backbone.to_dict()
    assert (config.pop('_delete_'), config.pop('type'), config['arch']) == (True, 'NAT', 'large')
    assert (config['kernel_size'], config['dilations']) == (11, 'm2f')
    config.update(arch=NARROW_LARGE, init_cfg=pretrained(checkpoint))
    return NAT(**config)


@pytest.mark.parametrize('kernel_size', [11, 7])
def test_dinat_large_style_hub_folder_into_the_mask2former_backbone(
        tmp_path, kernel_size, logged):
    """dinat-large-11x11-in22k-in1k-384's form (kernel 11, trained with D224) loads into the
    kernel-11 m2f backbone as it is: no resize, no log line about it; a kernel-7 Hub file
    gets its rpb tables resized, with the one log line."""
    source = NAT(arch=NARROW_LARGE, kernel_size=kernel_size, dilations='224', layer_scale=False)
    source.init_weights()
    hub_state = to_transformers_layout(source.state_dict(), 'dinat.')
    hub_state['classifier.weight'] = torch.zeros(1000, 192)
    save_file(hub_state, tmp_path / 'model.safetensors')
    config = dict(model_type='dinat', embed_dim=24, depths=[3, 4, 18, 5], num_heads=[1, 2, 4, 8],
                  kernel_size=kernel_size, dilations=DILATIONS_224, mlp_ratio=2.0,
                  layer_scale_init_value=0.0, num_channels=3, patch_size=4, qkv_bias=True,
                  hidden_act='gelu', layer_norm_eps=1e-5)
    (tmp_path / 'config.json').write_text(json.dumps(config))
    model = mask2former_backbone(tmp_path)
    assert model.dilations == DILATIONS_M2F and model.kernel_size == 11
    model.init_weights()
    resized = [line for line in logged if 'resized' in line]
    rpb = model.state_dict()['levels.2.blocks.17.attn.rpb']
    assert rpb.shape == (4, 21, 21)
    if kernel_size == 11:
        assert resized == []
        assert torch.equal(rpb, source.state_dict()['levels.2.blocks.17.attn.rpb'])
    else:
        assert resized == [
            "NAT: resized 30 relative position bias tables (bicubic) from 13x13 (kernel 7) in "
            "the checkpoint to the model's 21x21 (kernel 11)"]
    summary = next(line for line in logged if 'loaded' in line)
    assert 'loaded 405 tensors' in summary and 'classifier.weight' in summary
    assert not [line for line in logged if 'trained with' in line]
