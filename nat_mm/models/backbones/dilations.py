"""The published DiNAT dilation sets, by name.

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
