"""Every published setting of NAT / DiNAT, by name: archs, dilation sets, checkpoints.

- :data:`ARCH_SETTINGS`: ``NAT(arch=name)``, the published widths, depths,
  heads, MLP ratios, layer scale and drop path.
- :data:`DILATION_PRESETS` and :func:`resolve_dilations`: ``NAT(dilations=name)``.
- :data:`PUBLISHED_CHECKPOINTS`: the ImageNet classification weights the
  configs load, and :data:`HOW_TO_GET_CHECKPOINTS`, the instructions a missing
  file's error gives.

Plain data and one resolver; nothing here imports the rest of nat_mm.

Dilation sets
-------------
DiNAT is NAT with one dilation per layer. The official configs repeat 30-entry
lists; nat_mm names them instead: ``NAT(dilations='det')`` or, in a config,
``backbone=dict(dilations='det')``. A name stands for one list per depth
pattern: the depths (3, 4, 18, 5) of DiNAT tiny/small/base/large and the depths
(3, 4, 6, 5) of DiNAT-Mini, whose stage 3 is the first six entries of the
others' (the official mini lists). :func:`resolve_dilations` picks the list
that matches the model's depths, so ``arch='mini', dilations='det'`` gets
:data:`DILATIONS_DET_MINI`; a name without a list for the model's depths is an
error. The lists are also exported as constants.

==============  ======================  ===================================================
name            published as            used by
==============  ======================  ===================================================
``'224'``       D224                    ImageNet classification at 224x224 (the weights)
``'det'``       Ddet                    Mask R-CNN / Cascade Mask R-CNN on COCO
``'seg'``       Dseg                    UperNet ADE20K 512x512 (mini to base)
``'seg_large'`` DsegL                   UperNet DiNAT-L ADE20K 640x640
``'m2f'``       Dm2f                    Mask2Former DiNAT-L (kernel 11), every task
==============  ======================  ===================================================
"""

#: Published settings. ``drop_path_rate`` is the ImageNet-1k training value.
ARCH_SETTINGS = {
    'mini': dict(embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.,
                 drop_path_rate=0.2, layer_scale=None),
    'tiny': dict(embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.,
                 drop_path_rate=0.2, layer_scale=None),
    'small': dict(embed_dim=96, depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), mlp_ratio=2.,
                  drop_path_rate=0.3, layer_scale=1e-5),
    'base': dict(embed_dim=128, depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), mlp_ratio=2.,
                 drop_path_rate=0.5, layer_scale=1e-5),
    # DiNAT-L (there is no NAT-L): pretrained on ImageNet-22k, published without layer
    # scale; its drop path here is that of its UperNet and Mask2Former configs.
    'large': dict(embed_dim=192, depths=(3, 4, 18, 5), num_heads=(6, 12, 24, 48), mlp_ratio=2.,
                  drop_path_rate=0.3, layer_scale=None),
}

#: Depths of DiNAT tiny, small, base and large.
FULL_DEPTHS = (3, 4, 18, 5)
#: Depths of DiNAT-Mini.
MINI_DEPTHS = (3, 4, 6, 5)


def _mini(dilations):
    """The mini variant of a (3, 4, 18, 5) list: stage 3 cut to its first 6 layers."""
    return [dilations[0], dilations[1], dilations[2][:MINI_DEPTHS[2]], dilations[3]]


DILATIONS_224 = [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1, 1, 1, 1, 1]]
DILATIONS_224_MINI = _mini(DILATIONS_224)
DILATIONS_DET = [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7] * 3, [1, 3, 1, 3, 1]]
DILATIONS_DET_MINI = _mini(DILATIONS_DET)
DILATIONS_SEG = [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4] * 3, [1, 2, 1, 2, 1]]
DILATIONS_SEG_MINI = _mini(DILATIONS_SEG)
DILATIONS_SEG_LARGE = [[1, 20, 1], [1, 5, 1, 10], [1, 2, 1, 3, 1, 4, 1, 5] * 2 + [1, 5],
                       [1, 2, 1, 2, 1]]
DILATIONS_M2F = [[1, 14, 1], [1, 4, 1, 7], [1, 2, 1, 3] * 4 + [1, 3], [1, 1, 1, 1, 1]]

#: name -> {depths: per-layer dilations}.
DILATION_PRESETS = {
    '224': {FULL_DEPTHS: DILATIONS_224, MINI_DEPTHS: DILATIONS_224_MINI},
    'det': {FULL_DEPTHS: DILATIONS_DET, MINI_DEPTHS: DILATIONS_DET_MINI},
    'seg': {FULL_DEPTHS: DILATIONS_SEG, MINI_DEPTHS: DILATIONS_SEG_MINI},
    'seg_large': {FULL_DEPTHS: DILATIONS_SEG_LARGE},
    'm2f': {FULL_DEPTHS: DILATIONS_M2F},
}


def resolve_dilations(dilations, depths):
    """The per-layer dilations a ``dilations`` argument stands for.

    Args:
        dilations: a preset name (a key of :data:`DILATION_PRESETS`), or
            anything else (None, a list of lists), returned unchanged for
            the backbone's own checks.
        depths: the model's layers per stage.

    Returns:
        A fresh list of per-stage lists for a name; ``dilations`` otherwise.
    """
    if not isinstance(dilations, str):
        return dilations
    if dilations not in DILATION_PRESETS:
        raise ValueError(
            f'NAT: unknown dilation preset {dilations!r}; valid presets are '
            f'{sorted(DILATION_PRESETS)}, or give one list of dilations per stage')
    by_depths = DILATION_PRESETS[dilations]
    depths = tuple(depths)
    if depths not in by_depths:
        raise ValueError(
            f'NAT: dilation preset {dilations!r} is published for depths '
            f'{" and ".join(str(list(d)) for d in by_depths)}, not for this model\'s depths '
            f'{list(depths)}; give one list of dilations per stage instead')
    return [list(stage) for stage in by_depths[depths]]


#: Where the published classification checkpoints come from.
CHECKPOINT_SOURCE = ('the official Neighborhood Attention Transformer project '
                     '(SHI-Labs/Neighborhood-Attention-Transformer, classification checkpoints)')
#: The folder the configs load checkpoints from (relative to the working directory).
CHECKPOINT_DIR = 'checkpoints'
#: Published ImageNet classification checkpoints: name -> file name, the arch
#: and kernel size they were trained with, and the training data.
PUBLISHED_CHECKPOINTS = {
    **{f'nat_{arch}': dict(file=f'nat_{arch}.pth', arch=arch, kernel_size=7,
                           dataset='ImageNet-1k')
       for arch in ('mini', 'tiny', 'small', 'base')},
    **{f'dinat_{arch}_in1k_224': dict(file=f'dinat_{arch}_in1k_224.pth', arch=arch,
                                      kernel_size=7, dataset='ImageNet-1k')
       for arch in ('mini', 'tiny', 'small', 'base')},
    'dinat_large_in22k_224': dict(file='dinat_large_in22k_224.pth', arch='large',
                                  kernel_size=7, dataset='ImageNet-22k'),
    'dinat_large_in22k_224_11x11interp': dict(
        file='dinat_large_in22k_224_11x11interp.pth', arch='large', kernel_size=11,
        dataset='ImageNet-22k'),
}
HOW_TO_GET_CHECKPOINTS = (
    f'Download the published classification checkpoints '
    f'({", ".join(entry["file"] for entry in PUBLISHED_CHECKPOINTS.values())}) from '
    f'{CHECKPOINT_SOURCE} and put them under {CHECKPOINT_DIR}/, or train from scratch with '
    '--cfg-options model.backbone.init_cfg=None')
