"""Tests of the NAT backbone: shapes, numerics, published sizes, training options, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from environment import require_module
from nat_mm import NAT
from nat_mm.ops import na2d_reference

#: Published settings (NAT paper / official repository): C, depths, heads, mlp_ratio,
#: layer scale, ImageNet drop path, classification parameter count.
PUBLISHED = {
    'mini': dict(C=64, depths=(3, 4, 6, 5), heads=(2, 4, 8, 16), layer_scale=None,
                 drop_path=0.2, cls_params=19.98e6),
    'tiny': dict(C=64, depths=(3, 4, 18, 5), heads=(2, 4, 8, 16), layer_scale=None,
                 drop_path=0.2, cls_params=27.90e6),
    'small': dict(C=96, depths=(3, 4, 18, 5), heads=(3, 6, 12, 24), layer_scale=1e-5,
                  drop_path=0.3, cls_params=50.74e6),
    'base': dict(C=128, depths=(3, 4, 18, 5), heads=(4, 8, 16, 32), layer_scale=1e-5,
                 drop_path=0.5, cls_params=89.77e6),
}
#: DiNAT ImageNet dilations for depths (3, 4, 18, 5), and a cut to mini's (3, 4, 6, 5).
DINAT_DILATIONS = [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1, 1, 1, 1, 1]]
DINAT_MINI_DILATIONS = [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 3, [1, 1, 1, 1, 1]]
#: A small network for option tests (fast on CPU).
SMALL_ARCH = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), mlp_ratio=2.)

SIZES = [(224, 224), (255, 255), (112, 137), (97, 131), (32, 32)]


def expected_shapes(arch, height, width, out_indices=(0, 1, 2, 3)):
    """Output shapes from the strides: each stride-2 3x3 conv with padding 1 rounds up."""
    channels = PUBLISHED[arch]['C'] if isinstance(arch, str) else arch['embed_dim']
    shapes = []
    for level in range(4):
        stride = 4 * 2 ** level
        if level in out_indices:
            shapes.append((1, channels * 2 ** level, math.ceil(height / stride),
                           math.ceil(width / stride)))
    return shapes


#: Channels per head of the DiNAT variants of tiny, small and base (their depths, heads and
#: dilations at a fraction of the width; NAT of every arch and DiNAT-Mini are full width).
NARROW_HEAD_DIM = 4


def dinat_width(arch):
    """embed_dim of ``build(arch, dilated=True)``."""
    return PUBLISHED[arch]['C'] if arch == 'mini' else NARROW_HEAD_DIM * PUBLISHED[arch]['heads'][0]


@pytest.fixture(scope='module')
def build():
    """Builds each (arch, dilated) model once per module, in eval mode."""
    cache = {}

    def get(arch, dilated=False):
        if (arch, dilated) not in cache:
            options = {}
            if dilated:
                options = dict(dilations=DINAT_MINI_DILATIONS if arch == 'mini'
                               else DINAT_DILATIONS, embed_dim=dinat_width(arch))
            torch.manual_seed(0)
            cache[arch, dilated] = NAT(arch=arch, **options).eval()
        return cache[arch, dilated]
    return get


@pytest.mark.parametrize('dilated', [False, True], ids=['nat', 'dinat'])
@pytest.mark.parametrize('size', SIZES, ids=[f'{h}x{w}' for h, w in SIZES])
def test_mini_output_shapes_at_any_size(build, size, dilated):
    model = build('mini', dilated)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert isinstance(outs, tuple)
    assert [tuple(out.shape) for out in outs] == expected_shapes('mini', *size)
    assert all(torch.isfinite(out).all() for out in outs)


@pytest.mark.parametrize('dilated', [False, True], ids=['nat', 'dinat'])
@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_every_arch_output_shapes(build, arch, dilated):
    """32x32 keeps the big models fast; the last three levels (4x4 and less) are padded."""
    with torch.no_grad():
        outs = build(arch, dilated)(torch.randn(1, 3, 32, 32))
    width = dinat_width(arch) if dilated else PUBLISHED[arch]['C']
    assert [tuple(out.shape) for out in outs] == expected_shapes(dict(embed_dim=width), 32, 32)


def test_out_indices_select_levels_and_norms():
    model = NAT(arch=SMALL_ARCH, out_indices=(3, 1)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 48))
    assert [tuple(out.shape) for out in outs] == expected_shapes(SMALL_ARCH, 64, 48, (1, 3))
    norms = {name for name, _ in model.named_children() if name.startswith('norm')}
    assert norms == {'norm1', 'norm3'}


@pytest.mark.parametrize('arch', list(PUBLISHED))
def test_parameter_count_matches_published(build, arch):
    published = PUBLISHED[arch]
    width = 8 * published['C']
    head, final_norm = width * 1000 + 1000, 2 * width
    output_norms = sum(2 * published['C'] * 2 ** i for i in range(4))
    expected = published['cls_params'] - head - final_norm + output_norms
    num_params = sum(p.numel() for p in build(arch).parameters())
    assert abs(num_params - expected) < 0.01e6, (num_params, expected)


@pytest.mark.parametrize('arch', list(PUBLISHED))
def test_arch_settings(build, arch):
    published = PUBLISHED[arch]
    model = build(arch)
    assert [len(level.blocks) for level in model.levels] == list(published['depths'])
    assert [level.blocks[0].attn.num_heads for level in model.levels] == list(published['heads'])
    drop_probs = [block.drop_path.drop_prob for level in model.levels for block in level.blocks]
    assert drop_probs == pytest.approx(
        torch.linspace(0, published['drop_path'], sum(published['depths'])).tolist())
    blocks = [block for level in model.levels for block in level.blocks]
    if published['layer_scale'] is None:
        assert not any('gamma' in name for name, _ in model.named_parameters())
    else:
        for block in blocks:
            for gamma in (block.gamma1, block.gamma2):
                assert gamma.shape == (block.norm1.normalized_shape[0],)
                assert torch.all(gamma == published['layer_scale'])


def test_dinat_large_settings_and_parameter_count():
    """DiNAT-L: C 192, heads 6-12-24-48, mlp 2, no layer scale; the published 200M parameters
    of its classifier (ImageNet-22k -> 1k, 1000 classes) within 1%."""
    with torch.device('meta'):      # structure and sizes only: no memory, no initialisation
        model = NAT(arch='large')
    assert [level.blocks[0].attn.num_heads for level in model.levels] == [6, 12, 24, 48]
    assert [len(level.blocks) for level in model.levels] == [3, 4, 18, 5]
    assert model.num_features == (192, 384, 768, 1536)
    assert model.levels[0].blocks[0].mlp.fc1.out_features == 384
    assert not any('gamma' in name for name, _ in model.named_parameters())
    output_norms = sum(2 * 192 * 2 ** i for i in range(4))
    classifier = sum(p.numel() for p in model.parameters()) - output_norms + 2 * 1536 \
        + 1536 * 1000 + 1000
    assert classifier == pytest.approx(200e6, rel=0.01)


def test_explicit_arguments_override_arch():
    model = NAT(arch='small', depths=(1, 1, 1, 1), layer_scale=0, drop_path_rate=0.1)
    assert [len(level.blocks) for level in model.levels] == [1, 1, 1, 1]
    assert model.num_features == (96, 192, 384, 768)
    assert not any('gamma' in name for name, _ in model.named_parameters())
    assert model.levels[3].blocks[0].drop_path.drop_prob == pytest.approx(0.1)
    scaled = NAT(arch=SMALL_ARCH, layer_scale=1e-6)
    assert torch.all(scaled.levels[2].blocks[1].gamma2 == 1e-6)


# ----- numerics against an independent composition -------------------------------------------

def layer_norm(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[f'{name}.weight'], sd[f'{name}.bias'], eps=1e-5)


def neighborhood_attention(x, sd, name, heads, kernel_size, dilation):
    """qkv -> na2d_reference -> proj on (B, H, W, C), zero-padding maps smaller than K*d."""
    batch, height, width, channels = x.shape
    window = kernel_size * dilation
    x = F.pad(x, (0, 0, 0, max(0, window - width), 0, max(0, window - height)))
    padded_h, padded_w = x.shape[1:3]
    qkv = F.linear(x, sd[f'{name}.qkv.weight'], sd[f'{name}.qkv.bias'])
    qkv = qkv.reshape(batch, padded_h, padded_w, 3, heads, channels // heads)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5)
    out = na2d_reference(q, k, v, kernel_size, dilation, rpb=sd[f'{name}.rpb'])
    out = out.permute(0, 2, 3, 1, 4).reshape(batch, padded_h, padded_w, channels)
    return F.linear(out[:, :height, :width], sd[f'{name}.proj.weight'], sd[f'{name}.proj.bias'])


def reference_pyramid(sd, image, depths, heads, kernel_size, dilations, out_indices):
    """The NAT backbone written out from the architecture description, on a state dict."""
    x = F.conv2d(image, sd['patch_embed.proj.0.weight'], sd['patch_embed.proj.0.bias'],
                 stride=2, padding=1)
    x = F.conv2d(x, sd['patch_embed.proj.1.weight'], sd['patch_embed.proj.1.bias'],
                 stride=2, padding=1)
    x = layer_norm(x.permute(0, 2, 3, 1), sd, 'patch_embed.norm')
    outs = []
    for i, depth in enumerate(depths):
        for j in range(depth):
            name = f'levels.{i}.blocks.{j}'
            attn = neighborhood_attention(layer_norm(x, sd, f'{name}.norm1'), sd, f'{name}.attn',
                                          heads[i], kernel_size, dilations[i][j])
            x = x + sd.get(f'{name}.gamma1', 1.) * attn
            hidden = F.gelu(F.linear(layer_norm(x, sd, f'{name}.norm2'),
                                     sd[f'{name}.mlp.fc1.weight'], sd[f'{name}.mlp.fc1.bias']))
            mlp = F.linear(hidden, sd[f'{name}.mlp.fc2.weight'], sd[f'{name}.mlp.fc2.bias'])
            x = x + sd.get(f'{name}.gamma2', 1.) * mlp
        if i in out_indices:
            outs.append(layer_norm(x, sd, f'norm{i}').permute(0, 3, 1, 2))
        if i < len(depths) - 1:
            x = F.conv2d(x.permute(0, 3, 1, 2), sd[f'levels.{i}.downsample.reduction.weight'],
                         stride=2, padding=1).permute(0, 2, 3, 1)
            x = layer_norm(x, sd, f'levels.{i}.downsample.norm')
    return outs


def randomize_(model, seed=0):
    """Give every parameter a distinct random value (norms and gammas included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + 0.1)


@pytest.mark.parametrize('case', ['small_dilated_k5', 'mini'])
def test_pyramid_equals_independent_composition(case):
    if case == 'mini':
        arch, kernel_size, dilations, size = 'mini', 7, [[1] * d for d in (3, 4, 6, 5)], (61, 83)
        model = NAT(arch='mini').eval()
    else:
        arch, kernel_size, size = SMALL_ARCH, 5, (61, 83)
        dilations = [[2], [3], [1, 2], [1]]
        model = NAT(arch=SMALL_ARCH, kernel_size=kernel_size, dilations=dilations,
                    layer_scale=0.5).eval()
    randomize_(model)
    settings = model.arch_settings
    image = torch.randn(1, 3, *size)
    with torch.no_grad():
        outs = model(image)
        expected = reference_pyramid(model.state_dict(), image, settings['depths'],
                                     settings['num_heads'], kernel_size, dilations, (0, 1, 2, 3))
    assert [tuple(o.shape) for o in outs] == expected_shapes(arch, *size)
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


# ----- init ----------------------------------------------------------------------------------

def test_init_weights_from_scratch():
    model = NAT(arch=SMALL_ARCH, layer_scale=1e-3)
    randomize_(model)
    model.init_weights()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), name
        if isinstance(module, torch.nn.Linear):
            assert torch.all(module.bias == 0), name
    fc1 = model.levels[3].blocks[0].mlp.fc1.weight
    assert fc1.std().item() == pytest.approx(0.02, rel=0.05)
    rpb = torch.cat([block.attn.rpb.flatten() for level in model.levels for block in level.blocks])
    assert rpb.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.all(model.levels[1].blocks[0].gamma1 == 1e-3)


# ----- training options ----------------------------------------------------------------------

def test_frozen_stages():
    model = NAT(arch=SMALL_ARCH, frozen_stages=2)
    frozen_prefixes = ('patch_embed.', 'levels.0.', 'levels.1.', 'norm0.', 'norm1.')
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(frozen_prefixes)), name
    model.train()
    for name, module in model.named_modules():
        if name:
            assert module.training == (not (name + '.').startswith(frozen_prefixes)), name
    sum(out.sum() for out in model(torch.randn(1, 3, 64, 64))).backward()
    for name, param in model.named_parameters():
        assert (param.grad is None) == name.startswith(frozen_prefixes), name


def test_frozen_stages_zero_freezes_only_the_stem():
    model = NAT(arch=SMALL_ARCH, frozen_stages=0).train()
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in model.named_parameters()
                      if name.startswith('patch_embed.')}
    assert not model.patch_embed.training and model.levels[0].training


def count_saved_tensors(model, image):
    """Number of tensors autograd saves for backward during one forward."""
    saved = []

    def pack(tensor):
        saved.append(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(image)
    return len(saved)


def test_with_cp_same_outputs_and_gradients():
    torch.manual_seed(0)
    model = NAT(arch=SMALL_ARCH).train()
    checkpointed = NAT(arch=SMALL_ARCH, with_cp=True).train()
    checkpointed.load_state_dict(model.state_dict())
    image = torch.randn(1, 3, 64, 80)
    outputs = []
    for net in (model, checkpointed):
        outs = net(image)
        sum((out * torch.arange(out.numel()).view_as(out).sin()).sum() for out in outs).backward()
        outputs.append(outs)
    for out, out_cp in zip(*outputs):
        torch.testing.assert_close(out_cp, out)
    for (name, param), param_cp in zip(model.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(param_cp.grad, param.grad, atol=1e-4, rtol=1e-4, msg=name)
    assert count_saved_tensors(checkpointed, image) < count_saved_tensors(model, image) / 2


def test_drop_path_stochastic_in_train_only():
    torch.manual_seed(0)
    model = NAT(arch=SMALL_ARCH, drop_path_rate=0.5)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.train()
        first, second = model(image)[3], model(image)[3]
        assert not torch.allclose(first, second)
        model.eval()
        torch.testing.assert_close(model(image)[3], model(image)[3], rtol=0, atol=0)
        deterministic = NAT(arch=SMALL_ARCH, drop_path_rate=0.)
        deterministic.load_state_dict(model.state_dict())
        evaluated = deterministic.eval()(image)[3]
        trained = deterministic.train()(image)[3]
        torch.testing.assert_close(trained, evaluated, rtol=0, atol=0)


# ----- errors --------------------------------------------------------------------------------

def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError,
                       match=r"unknown arch 'tinny'.*'base', 'large', 'mini', 'small', 'tiny'"):
        NAT(arch='tinny')
    with pytest.raises(ValueError, match=r"missing \['mlp_ratio'\]"):
        NAT(arch=dict(embed_dim=32, depths=(1, 1), num_heads=(1, 2)))


@pytest.mark.parametrize('dilations, message', [
    ([[1, 2], [1] * 4, [1] * 6, [1] * 5], r'dilations\[0\].*stage 0.*depth 3.*length 2'),
    ([[1] * 3, [1] * 4, [1] * 6], r'one list per stage \(4 stages'),
    ([[1] * 3, [1] * 4, [1, 1, 1, 1, 1, 0], [1] * 5], r'dilations\[2\] must hold ints >= 1'),
])
def test_bad_dilations(dilations, message):
    with pytest.raises(ValueError, match=message):
        NAT(arch='mini', dilations=dilations)


@pytest.mark.parametrize('out_indices', [(4,), (0, 0), (), (-1,), 2])
def test_bad_out_indices(out_indices):
    with pytest.raises(ValueError, match=r'out_indices .*0\.\.3'):
        NAT(arch=SMALL_ARCH, out_indices=out_indices)


@pytest.mark.parametrize('frozen_stages', [-2, 5])
def test_frozen_stages_out_of_range(frozen_stages):
    with pytest.raises(ValueError, match=r'frozen_stages must be an int in -1\.\.4'):
        NAT(arch=SMALL_ARCH, frozen_stages=frozen_stages)


def test_mismatched_depths_and_heads():
    with pytest.raises(ValueError) as error:
        NAT(arch='mini', num_heads=(2, 4, 8))
    assert str(error.value) == ('NAT: depths [3, 4, 6, 5] and num_heads [2, 4, 8] must have the '
                                'same length (one entry per stage)')


# ----- registries ----------------------------------------------------------------------------

@pytest.mark.parametrize('package', ['mmdet', 'mmseg'])
def test_build_from_downstream_registry(package):
    registry = require_module(f'{package}.registry')
    model = registry.MODELS.build(dict(type='NAT', arch='mini', out_indices=(1, 2)))
    assert isinstance(model, NAT)
    assert model.out_indices == (1, 2)


def test_swin_arguments_are_refused_with_the_fix():
    with pytest.raises(ValueError) as error:
        NAT(arch='mini', embed_dims=96, window_size=7, convert_weights=True, depths=(1, 1, 1, 1))
    message = str(error.value)
    assert message.startswith('NAT got arguments it does not have: embed_dims, window_size, '
                              'convert_weights.')
    assert "_delete_=True" in message and "in_channels" in message


def test_unknown_arguments_are_named():
    with pytest.raises(ValueError) as error:
        NAT(arch='mini', width=3, colour='red')
    message = str(error.value)
    assert message.startswith('NAT got arguments it does not have: colour, width. Its '
                              'arguments are: arch, embed_dim, ')
    assert message.endswith(', with_cp, init_cfg.') and '_delete_' not in message
