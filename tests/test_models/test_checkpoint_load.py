"""Tests of loading official NAT checkpoints (layout from the official classification models)."""
import math
import os
import subprocess
import sys

import pytest
import torch

from nat_mm import NAT
from nat_mm.models import PUBLISHED_CHECKPOINTS, checkpoint_filter_fn, load_pretrained
from nat_mm.models.checkpoint import resize_rpb

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The checkpoint converter, as the tool fixtures name it.
CONVERTER = 'model_converters/nat2mm'

#: Official settings: C, depths, heads, mlp_ratio, layer scale.
OFFICIAL = {
    'mini': (64, (3, 4, 6, 5), (2, 4, 8, 16), 3, False),
    'tiny': (64, (3, 4, 18, 5), (2, 4, 8, 16), 3, False),
    'small': (96, (3, 4, 18, 5), (3, 6, 12, 24), 2, True),
    'base': (128, (3, 4, 18, 5), (4, 8, 16, 32), 2, True),
    'large': (192, (3, 4, 18, 5), (6, 12, 24, 48), 2, False),       # DiNAT-L (IN-22k)
}
OFFICIAL_KEY_COUNTS = {'mini': 253, 'tiny': 409, 'small': 469, 'base': 469, 'large': 409}
#: DiNAT-L at an eighth of its width: its depths, heads (so its rpb tables), mlp ratio and
#: keys, a 25th of its parameters.
NARROW_LARGE = (24, (3, 4, 18, 5), (6, 12, 24, 48), 2, False)
#: NAT-Small at a quarter of its width (its heads, so its rpb tables, and its layer scale).
NARROW_SMALL = (24, (3, 4, 18, 5), (3, 6, 12, 24), 2, True)
#: A small network for tests that need no official shapes.
SMALL_ARCH = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), mlp_ratio=2.)
OUTPUT_NORM_KEYS = {f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')}


def official_layout(arch, kernel_size=7, num_classes=1000):
    """Key -> shape of an official NAT / DiNAT classification checkpoint; ``arch``: a key of
    OFFICIAL or settings in its form."""
    embed_dim, depths, heads, mlp_ratio, layer_scale = \
        OFFICIAL[arch] if isinstance(arch, str) else arch
    half = embed_dim // 2
    layout = {
        'patch_embed.proj.0.weight': (half, 3, 3, 3), 'patch_embed.proj.0.bias': (half,),
        'patch_embed.proj.1.weight': (embed_dim, half, 3, 3),
        'patch_embed.proj.1.bias': (embed_dim,),
        'patch_embed.norm.weight': (embed_dim,), 'patch_embed.norm.bias': (embed_dim,),
    }
    for i, depth in enumerate(depths):
        dim = embed_dim * 2 ** i
        hidden = dim * mlp_ratio
        for j in range(depth):
            block = f'levels.{i}.blocks.{j}'
            layout.update({
                f'{block}.norm1.weight': (dim,), f'{block}.norm1.bias': (dim,),
                f'{block}.attn.rpb': (heads[i], 2 * kernel_size - 1, 2 * kernel_size - 1),
                f'{block}.attn.qkv.weight': (3 * dim, dim), f'{block}.attn.qkv.bias': (3 * dim,),
                f'{block}.attn.proj.weight': (dim, dim), f'{block}.attn.proj.bias': (dim,),
                f'{block}.norm2.weight': (dim,), f'{block}.norm2.bias': (dim,),
                f'{block}.mlp.fc1.weight': (hidden, dim), f'{block}.mlp.fc1.bias': (hidden,),
                f'{block}.mlp.fc2.weight': (dim, hidden), f'{block}.mlp.fc2.bias': (dim,),
            })
            if layer_scale:
                layout[f'{block}.gamma1'] = (dim,)
                layout[f'{block}.gamma2'] = (dim,)
        if i < len(depths) - 1:
            layout.update({
                f'levels.{i}.downsample.reduction.weight': (2 * dim, dim, 3, 3),
                f'levels.{i}.downsample.norm.weight': (2 * dim,),
                f'levels.{i}.downsample.norm.bias': (2 * dim,),
            })
    width = embed_dim * 8
    layout.update({'norm.weight': (width,), 'norm.bias': (width,),
                   'head.weight': (num_classes, width), 'head.bias': (num_classes,)})
    return layout


def official_state_dict(arch, seed=0, num_classes=1000):
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator)
            for key, shape in official_layout(arch, num_classes=num_classes).items()}


def cubic_weight(distance, a=-0.75):
    """Keys' cubic convolution kernel W(x) (the one torch's bicubic uses, a = -0.75)."""
    x = abs(distance)
    if x <= 1:
        return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    if x < 2:
        return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return 0.0


def bicubic_matrix(size_in, size_out):
    """(size_out, size_in) float64: output i's weights on the inputs. align_corners=False puts
    output i at input coordinate s = (i + 0.5) * size_in / size_out - 0.5 (not clamped); its
    four taps are floor(s) - 1 .. floor(s) + 2, weighted W(s - tap), and a tap outside the
    table reads the nearest border entry."""
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for i in range(size_out):
        source = (i + 0.5) * size_in / size_out - 0.5
        for tap in range(math.floor(source) - 1, math.floor(source) + 3):
            matrix[i, min(max(tap, 0), size_in - 1)] += cubic_weight(source - tap)
    return matrix


def bicubic_resize(table, size):
    """(heads, n, n) -> (heads, size, size), bicubic by the definition (separable: rows, then
    columns), computed in float64."""
    matrix = bicubic_matrix(table.shape[-1], size)
    return (matrix @ table.double() @ matrix.T).to(table.dtype)


def pretrained(path, **options):
    return dict(type='Pretrained', checkpoint=str(path), **options)


def assert_loaded(model, official):
    """Every backbone tensor of ``official`` is in ``model`` under the same name."""
    state = model.state_dict()
    backbone_keys = [key for key in official if not key.startswith(('head.', 'norm.'))]
    assert set(state) == set(backbone_keys) | OUTPUT_NORM_KEYS
    for key in backbone_keys:
        assert torch.equal(state[key], official[key]), key
    for i in range(4):
        assert torch.all(state[f'norm{i}.weight'] == 1) and torch.all(state[f'norm{i}.bias'] == 0)


@pytest.fixture(scope='module')
def mini_official():
    return official_state_dict('mini')


@pytest.fixture(scope='module')
def mini_path(tmp_path_factory, mini_official):
    """The official-layout mini checkpoint saved raw, as published."""
    path = tmp_path_factory.mktemp('checkpoints') / 'nat_mini.pth'
    torch.save(mini_official, path)
    return path


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    """(state_dict, path) of an official-layout tiny checkpoint."""
    state_dict = official_state_dict('tiny', seed=1)
    path = tmp_path_factory.mktemp('checkpoints') / 'nat_tiny.pth'
    torch.save(state_dict, path)
    return state_dict, path


@pytest.mark.parametrize('arch', list(OFFICIAL))
def test_official_layout_key_counts_and_model_keys(arch):
    layout = official_layout(arch)
    assert len(layout) == OFFICIAL_KEY_COUNTS[arch]
    with torch.device('meta'):      # names and shapes only: no memory, no initialisation
        model_state = NAT(arch=arch).state_dict()
    expected = {key: shape for key, shape in layout.items()
                if not key.startswith(('head.', 'norm.'))}
    assert {key: tuple(value.shape) for key, value in model_state.items()
            if key not in OUTPUT_NORM_KEYS} == expected


@pytest.mark.parametrize('wrap', ['raw', 'model', 'state_dict_module'])
def test_load_official_mini(tmp_path, mini_official, mini_path, wrap):
    path = tmp_path / 'nat_mini.pth'
    if wrap == 'raw':
        path = mini_path
    elif wrap == 'model':
        torch.save({'model': mini_official, 'epoch': 300}, path)
    else:
        torch.save({'state_dict': {f'module.{k}': v for k, v in mini_official.items()}}, path)
    model = NAT(arch='mini', init_cfg=pretrained(path))
    model.init_weights()
    assert_loaded(model, mini_official)


def test_load_through_a_parent_modules_init_weights(mini_official, mini_path):
    """Detectors and segmentors call the backbone's init_weights from BaseModule.init_weights."""
    from mmengine.model import BaseModule

    class Detector(BaseModule):
        def __init__(self):
            super().__init__()
            self.backbone = NAT(arch='mini', init_cfg=pretrained(mini_path))
            self.head = torch.nn.Linear(4, 4)

    detector = Detector()
    detector.init_weights()
    assert_loaded(detector.backbone, mini_official)


def test_load_official_small_with_layer_scale(tmp_path):
    """NAT-Small's keys, layer scale (gamma1, gamma2) included, at a quarter of its width."""
    official = official_state_dict(NARROW_SMALL)
    assert len(official) == OFFICIAL_KEY_COUNTS['small']
    assert sum('gamma' in key for key in official) == 2 * 30
    path = tmp_path / 'nat_small.pth'
    torch.save(official, path)
    embed_dim, _, _, _, _ = NARROW_SMALL
    model = NAT(arch='small', embed_dim=embed_dim, init_cfg=pretrained(path))
    model.init_weights()
    assert_loaded(model, official)


def test_load_logs_summary(mini_path, logged):
    NAT(arch='mini', init_cfg=pretrained(mini_path)).init_weights()
    summary = [message for message in logged if 'loaded' in message]
    assert len(summary) == 1
    assert 'loaded 249 tensors' in summary[0]
    assert 'head.{weight,bias}' in summary[0] and 'norm.{weight,bias}' in summary[0]
    assert 'norm0.{weight,bias}' in summary[0] and 'norm3.{weight,bias}' in summary[0]


def test_load_backbone_of_a_full_model_checkpoint(tmp_path, mini_official):
    full = {f'backbone.{k}': v for k, v in mini_official.items()}
    full['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 64, 1, 1)
    full['backbone.norm0.weight'] = torch.full((64,), 3.)
    path = tmp_path / 'mask_rcnn_nat_mini.pth'
    torch.save({'meta': {'epoch': 36}, 'state_dict': full}, path)
    model = NAT(arch='mini', init_cfg=pretrained(path))
    model.init_weights()
    assert torch.all(model.norm0.weight == 3.)
    torch.testing.assert_close(model.levels[2].blocks[5].mlp.fc2.weight,
                               mini_official['levels.2.blocks.5.mlp.fc2.weight'], rtol=0, atol=0)


def assert_unchanged(model, before):
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f'{key} changed by a refused load'


def test_other_arch_with_same_shapes_refused(tiny_checkpoint, mini_path):
    _, tiny_path = tiny_checkpoint
    with pytest.raises(ValueError, match=r'has 156 unknown tensors \(levels\.2\.blocks\.6\..*'
                                         r'Is it a checkpoint of another NAT variant\? The model '
                                         r'is NAT with embed_dim=64, .*Pass strict=False in the '
                                         r'Pretrained init_cfg to load the matching part anyway'):
        NAT(arch='mini', init_cfg=pretrained(tiny_path)).init_weights()
    model = NAT(arch='tiny')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r'lacks 156 tensors \(levels\.2\.blocks\.6\..*'
                                         r'Is it a checkpoint of another NAT variant\? The model '
                                         r'is NAT with embed_dim=64, .*Pass strict=False in the '
                                         r'Pretrained init_cfg to load the matching part anyway'):
        load_pretrained(model, str(mini_path))
    assert_unchanged(model, before)


def test_other_width_names_both_widths_and_the_archs_of_the_checkpoint(mini_path):
    model = NAT(arch='small', depths=(3, 4, 6, 5), layer_scale=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as error:
        load_pretrained(model, str(mini_path))
    message = str(error.value)
    assert str(mini_path) in message
    assert ("another width: its embed_dim is 64 (patch_embed.proj.1.weight (64, 32, 3, 3)), "
            "the model's is 96") in message
    assert ("Use the checkpoint of the model's variant, or build the model for this checkpoint "
            "(arch 'mini' or 'tiny' has that width)") in message
    assert_unchanged(model, before)


def test_other_heads_shape_mismatch_names_keys_and_shapes(mini_path):
    """Same width, other head counts: the rpb tables do not fit and cannot be resized."""
    model = NAT(arch='mini', num_heads=(1, 2, 4, 8), init_cfg=pretrained(mini_path))
    with pytest.raises(ValueError) as error:
        model.init_weights()
    message = str(error.value)
    assert 'levels.0.blocks.0.attn.rpb: checkpoint (2, 13, 13) vs model (1, 13, 13)' in message
    assert 'num_heads=[1, 2, 4, 8]' in message and str(mini_path) in message
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r'tensors have shapes that do not fit the model, first '
                                         r'levels\.0\.blocks\.0\.attn\.rpb: .*Is it a checkpoint '
                                         r'of another NAT variant\? The model is NAT with '):
        load_pretrained(model, str(mini_path))
    assert_unchanged(model, before)


def test_strict_false_loads_matching_part(tiny_checkpoint):
    tiny, path = tiny_checkpoint
    model = NAT(arch='mini', init_cfg=pretrained(path, strict=False))
    model.init_weights()
    torch.testing.assert_close(model.levels[3].blocks[4].attn.rpb,
                               tiny['levels.3.blocks.4.attn.rpb'], rtol=0, atol=0)


def test_missing_checkpoint_file_explains_how_to_get_it(tmp_path):
    path = tmp_path / 'checkpoints' / 'nat_tiny.pth'
    model = NAT(arch=SMALL_ARCH, init_cfg=pretrained(path))
    with pytest.raises(FileNotFoundError) as error:
        model.init_weights()
    message = str(error.value)
    assert str(path) in message
    assert all(entry['file'] in message for entry in PUBLISHED_CHECKPOINTS.values())
    assert 'checkpoints/' in message and 'SHI-Labs/Neighborhood-Attention-Transformer' in message
    assert 'model.backbone.init_cfg=None' in message


@pytest.mark.parametrize('size_in, kernel_size', [(5, 5), (5, 7), (13, 5), (13, 11), (21, 7)])
def test_rpb_resize_is_bicubic_by_its_definition(size_in, kernel_size):
    """Up and down, small tables; the same weights in every head."""
    table = torch.randn(3, size_in, size_in, generator=torch.Generator().manual_seed(size_in))
    resized = resize_rpb(table, kernel_size)
    torch.testing.assert_close(resized, bicubic_resize(table, 2 * kernel_size - 1))


def test_bicubic_reference_on_a_hand_worked_entry():
    """3 -> 5 entries: output 0 sits at input 0.5 * 3/5 - 0.5 = -0.2, its taps -2..1 at
    distances 1.8, 0.8, 0.2, 1.2 (weights -0.024, 0.2, 0.92, -0.096), the first three
    reading the border entry 0."""
    torch.testing.assert_close(bicubic_matrix(3, 5)[0],
                               torch.tensor([-0.024 + 0.2 + 0.92, -0.096, 0.], dtype=torch.float64))


@pytest.mark.parametrize('kernel_size', [5, 9])
def test_rpb_resized_when_kernel_differs(mini_official, kernel_size):
    model = NAT(arch='mini', kernel_size=kernel_size)
    converted = checkpoint_filter_fn({'model': mini_official}, model)
    size = 2 * kernel_size - 1
    for key, value in converted.items():
        if key.endswith('attn.rpb'):
            original = mini_official[key]
            assert value.shape == (original.shape[0], size, size)
            # the zero-offset entry sits on the centre of both grids
            torch.testing.assert_close(value[:, kernel_size - 1, kernel_size - 1],
                                       original[:, 6, 6])
            torch.testing.assert_close(value, bicubic_resize(original, size))
        else:
            assert torch.equal(value, mini_official[key]), key
    constant = {**mini_official, 'levels.0.blocks.0.attn.rpb': torch.full((2, 13, 13), 0.7)}
    resized = checkpoint_filter_fn(constant, model)['levels.0.blocks.0.attn.rpb']
    torch.testing.assert_close(resized, torch.full((2, size, size), 0.7))
    model.load_state_dict(converted, strict=False)


def test_bad_pretrained_options(mini_path):
    model = NAT(arch=SMALL_ARCH, init_cfg=dict(type='Pretrained', checkpont=str(mini_path)))
    with pytest.raises(ValueError, match=r"needs 'checkpoint'.*got \['checkpont'\]"):
        model.init_weights()


def test_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save({'weights': [1, 2, 3]}, path)
    with pytest.raises(TypeError) as error:
        NAT(arch=SMALL_ARCH, init_cfg=pretrained(path)).init_weights()
    assert str(error.value) == (
        'checkpoint is neither a state dict nor a dict with a "state_dict" or "model" entry: '
        "entries ['weights'] are not tensors. Give a file saved as "
        'torch.save(model.state_dict(), path), or a training checkpoint holding one')


def run_converter(tool_path, *args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, tool_path(CONVERTER), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_convert_checkpoint_cli_round_trip(tmp_path, mini_official, mini_path, tool_path):
    src, dst = mini_path, tmp_path / 'out' / 'nat_mini_backbone.pth'
    result = run_converter(tool_path, src, dst, '--arch', 'mini')
    assert result.returncode == 0, result.stderr
    assert '249 backbone tensors' in result.stdout
    saved = torch.load(dst)
    assert set(saved) == {'state_dict', 'meta'} and saved['meta']['arch'] == 'mini'
    assert len(saved['state_dict']) == 249
    model = NAT(arch='mini', init_cfg=pretrained(dst))
    model.init_weights()
    assert_loaded(model, mini_official)


def test_convert_checkpoint_cli_refuses_other_arch(tmp_path, mini_path, load_tool):
    converter = load_tool(CONVERTER)
    dst = tmp_path / 'nat_tiny_backbone.pth'
    with pytest.raises(SystemExit) as error:
        converter.main([str(mini_path), str(dst), '--arch', 'tiny'])
    assert 'lacks 156 tensors (levels.2.blocks.6.' in str(error.value)
    assert 'Is it a checkpoint of another NAT variant? The model is NAT with ' in str(error.value)
    assert not dst.exists()


def test_in22k_dinat_large_loads_into_the_kernel_11_mask2former_backbone(tmp_path, logged):
    """The 21841-class head is dropped; every 13x13 rpb is resized to 21x21, one log line.
    (DiNAT-L's keys and rpb tables at an eighth of its width: NARROW_LARGE.)"""
    official = official_state_dict(NARROW_LARGE, num_classes=21841)
    assert len(official) == OFFICIAL_KEY_COUNTS['large']
    path = tmp_path / 'dinat_large_in22k_224.pth'
    torch.save(official, path)
    model = NAT(arch='large', embed_dim=NARROW_LARGE[0], kernel_size=11, dilations='m2f',
                init_cfg=pretrained(path))
    # the keys of DiNAT-L's backbone, its output norms aside
    assert set(model.state_dict()) - OUTPUT_NORM_KEYS == set(official_layout('large')) - {
        'head.weight', 'head.bias', 'norm.weight', 'norm.bias'}
    model.init_weights()
    resize_lines = [message for message in logged if 'resized' in message]
    assert resize_lines == [
        "NAT: resized 30 relative position bias tables (bicubic) from 13x13 (kernel 7) in the "
        "checkpoint to the model's 21x21 (kernel 11)"]
    summary = next(message for message in logged if 'loaded' in message)
    assert 'loaded 405 tensors' in summary and 'head.{weight,bias}' in summary
    state = model.state_dict()
    for key, value in official.items():
        if key.startswith(('head.', 'norm.')):
            assert key not in state
        elif key.endswith('attn.rpb'):
            torch.testing.assert_close(state[key], bicubic_resize(value, 21))
        else:
            assert torch.equal(state[key], value), key


@pytest.mark.parametrize('num_classes', [1000, 21841])
def test_dinat_large_heads_of_any_class_count_are_dropped(num_classes):
    official = {'head.weight': torch.zeros(num_classes, 1536),
                'head.bias': torch.zeros(num_classes),
                'norm.weight': torch.ones(1536), 'norm.bias': torch.zeros(1536),
                'levels.3.blocks.0.attn.rpb': torch.zeros(48, 13, 13)}
    model = NAT(arch=dict(embed_dim=192, depths=(0, 0, 0, 1), num_heads=(6, 12, 24, 48),
                          mlp_ratio=2.))
    converted = checkpoint_filter_fn(official, model)
    assert set(converted) == {'levels.3.blocks.0.attn.rpb'}


@pytest.mark.parametrize('shape', [(2, 13, 12), (2, 12, 12), (2, 169), (2, )])
def test_rpb_that_cannot_be_resized_is_refused(mini_official, shape):
    """A kernel-11 model and an rpb that is not a (heads, 2K-1, 2K-1) table of its heads."""
    model = NAT(arch='mini', kernel_size=11)
    broken = dict(mini_official)
    broken['levels.0.blocks.1.attn.rpb'] = torch.zeros(shape)
    expected = (rf'levels\.0\.blocks\.1\.attn\.rpb has shape \({", ".join(map(str, shape))},?\): '
                r"it cannot be resized to the model's \(2, 21, 21\) \(kernel 11\)")
    with pytest.raises(ValueError, match=expected):
        checkpoint_filter_fn(broken, model)


def test_convert_checkpoint_cli_in22k_head_kernel_11(tmp_path, capsys, load_tool, logged):
    """An ImageNet-22k checkpoint (21841-class head) converted for a kernel-11 model: the head
    is dropped, every rpb resized with one log line (NAT-Mini's layout: the conversion is the
    same for every arch; DiNAT-L's keys and rpb tables load in the test above)."""
    official = official_state_dict('mini', num_classes=21841)
    src, dst = tmp_path / 'mini_in22k.pth', tmp_path / 'mini_k11.pth'
    torch.save(official, src)
    load_tool(CONVERTER).main([str(src), str(dst), '--arch', 'mini', '--kernel-size', '11'])
    assert sum('resized 18 relative position bias tables' in message
               for message in logged) == 1
    out = capsys.readouterr().out
    assert f'{OFFICIAL_KEY_COUNTS["mini"] - 4} backbone tensors' in out
    assert 'head.{weight,bias}' in out
    saved = torch.load(dst)
    assert saved['meta'] == dict(arch='mini', kernel_size=11, source=src.name)
    rpb = saved['state_dict']['levels.2.blocks.5.attn.rpb']
    torch.testing.assert_close(rpb, bicubic_resize(official['levels.2.blocks.5.attn.rpb'], 21))
    assert set(saved['state_dict']) == set(official) - {'head.weight', 'head.bias',
                                                        'norm.weight', 'norm.bias'}


def test_convert_checkpoint_cli_refuses_other_width(tmp_path, mini_path, load_tool):
    dst = tmp_path / 'out.pth'
    with pytest.raises(SystemExit) as error:
        load_tool(CONVERTER).main([str(mini_path), str(dst), '--arch', 'small'])
    assert "its embed_dim is 64" in str(error.value) and "the model's is 96" in str(error.value)
    assert "Use the checkpoint of the model's variant, or build the model for this checkpoint " \
        "(arch 'mini' or 'tiny' has that width)" in str(error.value)
    assert not dst.exists()
