"""Presets: the named DiNAT dilation sets (published lists, mini variants, bad input)
and the published checkpoints."""
import re
from pathlib import Path

import pytest

from nat_mm import NAT
from nat_mm.models import presets

#: The published lists, written out as the official configs give them (NAT_ZOO.md).
PUBLISHED = {
    '224': [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2],
            [1, 1, 1, 1, 1]],
    'det': [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7],
            [1, 3, 1, 3, 1]],
    'seg': [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4, 1, 2, 1, 3, 1, 4, 1, 2, 1, 3, 1, 4],
            [1, 2, 1, 2, 1]],
    'seg_large': [[1, 20, 1], [1, 5, 1, 10],
                  [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5], [1, 2, 1, 2, 1]],
    'm2f': [[1, 14, 1], [1, 4, 1, 7], [1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 3],
            [1, 1, 1, 1, 1]],
}
#: Stage 3 of the published DiNAT-Mini lists.
PUBLISHED_MINI_STAGE3 = {'224': [1, 2, 1, 2, 1, 2], 'det': [1, 3, 1, 5, 1, 7],
                         'seg': [1, 2, 1, 3, 1, 4]}
SMALL_ARCH = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), mlp_ratio=2.)


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_presets_are_the_published_lists(name):
    assert presets.resolve_dilations(name, (3, 4, 18, 5)) == PUBLISHED[name]
    constant = {'224': presets.DILATIONS_224, 'det': presets.DILATIONS_DET,
                'seg': presets.DILATIONS_SEG, 'seg_large': presets.DILATIONS_SEG_LARGE,
                'm2f': presets.DILATIONS_M2F}[name]
    assert constant == PUBLISHED[name]


@pytest.mark.parametrize('name', sorted(PUBLISHED_MINI_STAGE3))
def test_mini_variant_is_chosen_by_depth(name):
    expected = list(PUBLISHED[name])
    expected[2] = PUBLISHED_MINI_STAGE3[name]
    assert presets.resolve_dilations(name, (3, 4, 6, 5)) == expected
    assert NAT(arch='mini', dilations=name).dilations == expected


def test_nat_resolves_a_name_to_per_block_dilations():
    """DiNAT-L's depths at a small width: the kernel-11 Mask2Former set, block by block."""
    arch = dict(SMALL_ARCH, depths=(3, 4, 18, 5))
    model = NAT(arch=arch, kernel_size=11, dilations='m2f')
    assert model.dilations == PUBLISHED['m2f']
    assert [[block.attn.dilation for block in level.blocks] for level in model.levels] == \
        PUBLISHED['m2f']
    assert all(block.attn.kernel_size == 11 for level in model.levels for block in level.blocks)


def test_resolved_lists_are_copies():
    first = presets.resolve_dilations('det', (3, 4, 18, 5))
    first[0][1] = 99
    assert presets.DILATIONS_DET[0][1] == 28


def test_non_names_pass_through_unchanged():
    lists = [[1], [2], [1, 3], [1]]
    assert presets.resolve_dilations(lists, SMALL_ARCH['depths']) is lists
    assert presets.resolve_dilations(None, SMALL_ARCH['depths']) is None


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown dilation preset 'coco'; valid presets are "
                                         r"\['224', 'det', 'm2f', 'seg', 'seg_large'\]"):
        NAT(arch='tiny', dilations='coco')


@pytest.mark.parametrize('name, depths', [('det', (1, 1, 2, 1)), ('m2f', (3, 4, 6, 5)),
                                          ('seg_large', (3, 4, 6, 5))])
def test_preset_without_a_list_for_the_depths(name, depths):
    arch = dict(SMALL_ARCH, depths=depths)
    with pytest.raises(ValueError, match=rf"preset '{name}' is published for depths "
                                         rf".*not for this model's depths \[{depths[0]}, "):
        NAT(arch=arch, dilations=name)


def test_list_that_does_not_match_the_depths():
    """A tiny/large list given to mini (stage 3 has 6 layers, not 18)."""
    with pytest.raises(ValueError, match=r'dilations\[2\].*stage 2 \(depth 6\), got length 18'):
        NAT(arch='mini', dilations=presets.DILATIONS_DET)


def test_every_config_loads_a_published_checkpoint_of_its_arch():
    """The checkpoint file each config names is in PUBLISHED_CHECKPOINTS, with the arch the
    config builds (read from the config files' text: the configs need mmdet/mmseg)."""
    configs = Path(__file__).resolve().parents[2] / 'configs'
    files = {entry['file']: entry for entry in presets.PUBLISHED_CHECKPOINTS.values()}
    named = 0
    for config in sorted(configs.glob('*.py')):
        for file in re.findall(r"checkpoint='checkpoints/([\w.]+)'", config.read_text()):
            assert file in files, f'{config.name}: {file} is not a published checkpoint'
            size = re.search(r'_(mini|tiny|small|base|large)_', config.name)[1]
            assert files[file]['arch'] == size, config.name
            named += 1
    assert named >= 20
    assert all(entry['arch'] in presets.ARCH_SETTINGS
               for entry in presets.PUBLISHED_CHECKPOINTS.values())
