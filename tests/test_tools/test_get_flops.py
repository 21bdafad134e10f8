"""tools/analysis_tools/get_flops.py counts the neighbourhood attention and matches the
closed-form cost."""
import math

import pytest
import torch

from nat_mm import NAT

#: A small NAT; mlp_ratio 3 as NAT-Mini/Tiny, so an unpadded layer costs 10*N*C^2 + 2*N*K^2*C.
SMALL_ARCH = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), mlp_ratio=3.)


@pytest.fixture(scope='module')
def get_flops(load_tool):
    return load_tool('analysis_tools/get_flops')


def closed_form(arch, kernel_size, height, width):
    """{'conv', 'linear', 'neighborhood_attention'} multiply-adds of a NAT backbone (batch 1).

    Per layer on an Hi x Wi map with Ci channels: qkv 3*Np*Ci^2 and attention
    2*Np*K^2*Ci on the map padded to at least K x K (Np positions), proj
    N*Ci^2 and MLP 2*N*Ci*hidden on the N = Hi*Wi real positions.
    """
    def down(size):                       # 3x3 conv, stride 2, padding 1
        return math.ceil(size / 2)

    channels = arch['embed_dim']
    h1, w1 = down(height), down(width)
    h, w = down(h1), down(w1)
    conv = h1 * w1 * (channels // 2) * 3 * 9 + h * w * channels * (channels // 2) * 9
    linear = attention = 0
    for level, depth in enumerate(arch['depths']):
        dim = channels * 2 ** level
        hidden = int(dim * arch['mlp_ratio'])
        n = h * w
        n_padded = max(h, kernel_size) * max(w, kernel_size)
        linear += depth * (3 * n_padded * dim ** 2 + n * dim ** 2 + 2 * n * dim * hidden)
        attention += depth * 2 * n_padded * kernel_size ** 2 * dim
        if level < len(arch['depths']) - 1:
            h, w = down(h), down(w)
            conv += h * w * 2 * dim * dim * 9
    return dict(conv=conv, linear=linear, neighborhood_attention=attention)


def test_closed_form_is_the_published_per_layer_cost():
    """Guard the test's own formula: an unpadded layer costs 10*N*C^2 + 2*N*K^2*C."""
    arch = dict(embed_dim=64, depths=(0, 0, 1, 0), num_heads=(1, 1, 1, 1), mlp_ratio=3.)
    counts = closed_form(arch, 7, 14 * 16, 14 * 16)       # level 2 runs on 14 x 14
    n, dim = 14 * 14, 256
    assert counts['linear'] == 10 * n * dim ** 2
    assert counts['neighborhood_attention'] == 2 * n * 49 * dim


@pytest.mark.parametrize('height, width', [(100, 130), (224, 224)])
def test_counts_match_closed_form(get_flops, height, width):
    """100x130: odd sizes round up and the last two levels (7x9, 4x5) include a padded one."""
    torch.manual_seed(0)
    model = NAT(arch=SMALL_ARCH).eval()
    analyzer = get_flops.analyze_flops(model, (torch.randn(1, 3, height, width),))
    by_operator = analyzer.by_operator()
    expected = closed_form(SMALL_ARCH, 7, height, width)
    for operator, count in expected.items():
        assert by_operator[operator] == count, operator
    assert set(by_operator) == set(expected) | {'layer_norm'}


def test_attention_count_scales_with_kernel_area(get_flops):
    """K=7 vs K=3 at 224 (no padding for either): only the attention changes, by 49/9."""
    inputs = (torch.randn(1, 3, 224, 224),)
    counts = {}
    for kernel_size in (3, 7):
        model = NAT(arch=SMALL_ARCH, kernel_size=kernel_size).eval()
        counts[kernel_size] = get_flops.analyze_flops(model, inputs).by_operator()
    assert counts[7]['neighborhood_attention'] * 9 == counts[3]['neighborhood_attention'] * 49
    for operator in ('conv', 'linear', 'layer_norm'):
        assert counts[7][operator] == counts[3][operator]


def test_classification_body_of_nat_mini_matches_published(get_flops):
    """NAT-Mini: 2.7 GMACs and 19.98M parameters at 224x224 (NAT paper)."""
    model = get_flops.ClassificationBody('mini').eval()
    total = get_flops.analyze_flops(model, (torch.randn(1, 3, 224, 224),)).total()
    assert total == pytest.approx(2.7e9, rel=0.03)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(19.98e6, rel=1e-3)


def test_command_line_errors(get_flops, capsys):
    with pytest.raises(SystemExit):
        get_flops.parse_args([])
    assert capsys.readouterr().err.endswith(
        'error: nothing to count: give a CONFIG (an mmdet or mmseg config) or --arch (a NAT '
        'classification body)\n')
    with pytest.raises(SystemExit):
        get_flops.parse_args(['cfg.py', '--arch', 'tiny'])
    assert capsys.readouterr().err.endswith(
        'error: both a CONFIG (cfg.py) and --arch tiny: give one of them\n')
    with pytest.raises(FileNotFoundError) as error:
        get_flops.build_from_config('no/such/config.py', backbone_only=False)
    assert str(error.value) == ('get_flops: config no/such/config.py not found: give the path of '
                                'an mmdet or mmseg config file (e.g. '
                                'configs/mask_rcnn_nat_tiny_coco.py)')
