"""Every published setting of NAT / DiNAT, by name: archs, dilation sets, checkpoints.

- :data:`ARCH_SETTINGS`: ``NAT(arch=name)``, the published widths, depths,
  heads, MLP ratios, layer scale and drop path.
- :data:`DILATION_PRESETS` and :func:`resolve_dilations`: ``NAT(dilations=name)``.
- :data:`PUBLISHED_CHECKPOINTS`: every published ImageNet classification
  checkpoint (file, model, kernel, dilations, resolution, data, official address,
  Hugging Face Hub copy, the configs that load it) and :data:`HOW_TO_GET_CHECKPOINTS`,
  the instructions a missing file's error gives (``dev/weights_table.py`` writes the
  table of docs/checkpoints.md from them).

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
``'384'``       (dinat_large_384)       DiNAT-L ImageNet classification at 384x384, kernel 7
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
#: DiNAT-L's 384x384 (kernel 7) ImageNet dilations (official ``dinat_large_384``); the
#: 384x384 kernel-11 model was trained with D224.
DILATIONS_384 = [[1, 13, 1], [1, 6, 1, 6], [1, 3] * 9, [1, 1, 1, 1, 1]]


#: name -> {depths: per-layer dilations}.
DILATION_PRESETS = {
    '224': {FULL_DEPTHS: DILATIONS_224, MINI_DEPTHS: DILATIONS_224_MINI},
    'det': {FULL_DEPTHS: DILATIONS_DET, MINI_DEPTHS: DILATIONS_DET_MINI},
    'seg': {FULL_DEPTHS: DILATIONS_SEG, MINI_DEPTHS: DILATIONS_SEG_MINI},
    'seg_large': {FULL_DEPTHS: DILATIONS_SEG_LARGE},
    'm2f': {FULL_DEPTHS: DILATIONS_M2F},
    '384': {FULL_DEPTHS: DILATIONS_384},
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
#: The console command that fetches them (:mod:`nat_mm.cli.download`).
DOWNLOAD_COMMAND = 'nat-mm-download'
_NAT_URL = 'https://shi-labs.com/projects/nat/checkpoints/CLS/'
_DINAT_URL = 'https://shi-labs.com/projects/dinat/checkpoints/'
#: Where the MMPretrain classification configs are, under configs/.
_CLASSIFIER_DIR = 'mmpretrain/'
_M2F_CONFIGS = ('mask2former_dinat_large_coco_panoptic.py',
                'mask2former_dinat_large_coco_instance.py', 'mask2former_dinat_large_ade20k.py')


def _checkpoint(model, arch, url, kernel_size=7, dilations=None, layer_scale=None,
                resolution=224, dataset='ImageNet-1k', hub_repo=None, hub_size=None, configs=(),
                classifier_config=None, note=''):
    return dict(file=url.rsplit('/', 1)[-1], model=model, arch=arch, kernel_size=kernel_size,
                dilations=dilations, layer_scale=layer_scale, resolution=resolution,
                dataset=dataset, url=url,
                hub_repo=hub_repo, hub_file='pytorch_model.bin' if hub_repo else None,
                hub_size=hub_size, configs=tuple(configs), classifier_config=classifier_config,
                note=note)


def _task_configs(family, arch):
    """UperNet, Mask R-CNN (none for base) and Cascade Mask R-CNN configs of one backbone."""
    mask_rcnn = () if arch == 'base' else (f'mask_rcnn_{family}_{arch}_coco.py',)
    return (f'upernet_{family}_{arch}_ade20k.py', *mask_rcnn,
            f'cascade_mask_rcnn_{family}_{arch}_coco.py')


#: arch, its name in model names, the size the Hub lists for its weights file.
_SIZES = (('mini', 'Mini', '80 MB'), ('tiny', 'Tiny', '112 MB'), ('small', 'Small', '203 MB'),
          ('base', 'Base', '359 MB'))

#: Every published NAT / DiNAT ImageNet classification checkpoint that ``NAT`` loads
#: (the hierarchical models; not DiNAT_s, the isotropic models or the task models),
#: by the name ``nat-mm-download`` (:mod:`nat_mm.cli.download`) takes. Each entry:
#:
#: - ``file``: its name under ``checkpoints/``, the official file name (what the configs name);
#: - ``model``, ``arch`` (nat_mm's; 'large' is DiNAT-L), ``kernel_size`` (K of its
#:   (heads, 2K-1, 2K-1) rpb tables), ``dilations`` (the preset it was trained with;
#:   None: NAT), ``layer_scale`` (False where the model has none but its arch has:
#:   DiNAT-Small; None: the arch's), ``resolution``, ``dataset`` (its ImageNet data);
#: - ``url``: the official download address (the site publishes no sizes or hashes);
#: - ``hub_repo``, ``hub_file``, ``hub_size``: the Hugging Face Hub copy (Transformers'
#:   layout) and its size as the Hub lists it, or None where there is none;
#: - ``configs``: the configs in configs/ that load it; ``classifier_config``: the MMPretrain
#:   config (under configs/) that builds and evaluates the whole classifier, or None for the
#:   ImageNet-22k weights (pretraining for the fine-tuning configs); ``note``: what else to know.
PUBLISHED_CHECKPOINTS = {
    **{f'nat_{arch}': _checkpoint(
        f'NAT-{title}', arch, f'{_NAT_URL}nat_{arch}.pth', hub_repo=f'shi-labs/nat-{arch}-in1k-224',
        hub_size=size, configs=_task_configs('nat', arch),
        classifier_config=f'{_CLASSIFIER_DIR}nat/nat-{arch}_8xb128_in1k.py')
       for arch, title, size in _SIZES},
    **{f'dinat_{arch}_in1k_224': _checkpoint(
        f'DiNAT-{title}', arch, f'{_DINAT_URL}imagenet1k/dinat_{arch}_in1k_224.pth',
        dilations='224', layer_scale=False if arch == 'small' else None,
        hub_repo=f'shi-labs/dinat-{arch}-in1k-224', hub_size=size,
        configs=_task_configs('dinat', arch),
        classifier_config=f'{_CLASSIFIER_DIR}dinat/dinat-{arch}_8xb128_in1k.py')
       for arch, title, size in _SIZES},
    'dinat_large_in22k_224': _checkpoint(
        'DiNAT-L', 'large', f'{_DINAT_URL}imagenet22k/dinat_large_in22k_224.pth',
        dilations='224', dataset='ImageNet-22k',
        configs=('upernet_dinat_large_ade20k.py', 'cascade_mask_rcnn_dinat_large_coco.py',
                 *_M2F_CONFIGS),
        note='21841-class head (dropped on load); the Mask2Former configs (kernel 11) resize '
             'its rpb tables on load, as the official Mask2Former configs name this file'),
    'dinat_large_in22k_224_11x11interp': _checkpoint(
        'DiNAT-L', 'large', f'{_DINAT_URL}imagenet22k/dinat_large_in22k_224_11x11interp.pth',
        kernel_size=11, dilations='224', dataset='ImageNet-22k',
        note='dinat_large_in22k_224 with its rpb tables resized (bicubic) to 21x21 by the '
             'authors: loads into the Mask2Former backbone without a resize (--cfg-options '
             'model.backbone.init_cfg.checkpoint=checkpoints/'
             'dinat_large_in22k_224_11x11interp.pth)'),
    'dinat_large_in22k_in1k_224': _checkpoint(
        'DiNAT-L', 'large', f'{_DINAT_URL}imagenet1k/dinat_large_in22k_in1k_224.pth',
        dilations='224', dataset='ImageNet-22k, then ImageNet-1k',
        hub_repo='shi-labs/dinat-large-in22k-in1k-224', hub_size='804 MB',
        classifier_config=f'{_CLASSIFIER_DIR}dinat/dinat-large_in22k-pre_8xb64_in1k.py'),
    'dinat_large_in22k_in1k_384': _checkpoint(
        'DiNAT-L', 'large', f'{_DINAT_URL}imagenet1k/dinat_large_in22k_in1k_384.pth',
        dilations='384', resolution=384, dataset='ImageNet-22k, then ImageNet-1k',
        hub_repo='shi-labs/dinat-large-in22k-in1k-384', hub_size='804 MB',
        classifier_config=f'{_CLASSIFIER_DIR}dinat/dinat-large_in22k-pre_8xb64_in1k-384px.py'),
    'dinat_large_in22k_in1k_384_11x11': _checkpoint(
        'DiNAT-L', 'large', f'{_DINAT_URL}imagenet1k/dinat_large_in22k_in1k_384_11x11.pth',
        kernel_size=11, dilations='224', resolution=384, dataset='ImageNet-22k, then ImageNet-1k',
        hub_repo='shi-labs/dinat-large-11x11-in22k-in1k-384', hub_size='805 MB',
        classifier_config=f'{_CLASSIFIER_DIR}dinat/dinat-large-k11_in22k-pre_8xb64_in1k-384px.py',
        note='kernel 11: loads into the Mask2Former backbone without a resize '
             '(--cfg-options model.backbone.init_cfg.checkpoint=FILE_OR_HUB_FOLDER); fine-tuned '
             'on ImageNet-1k at 384, unlike the ImageNet-22k file the official Mask2Former '
             'configs name'),
}

#: What a missing checkpoint's error says.
HOW_TO_GET_CHECKPOINTS = (
    f'Download the published classification checkpoints '
    f'({", ".join(entry["file"] for entry in PUBLISHED_CHECKPOINTS.values())}) with '
    f'"{DOWNLOAD_COMMAND} NAME" (--list shows the names, addresses and '
    f'the configs that use each file) or by hand from {CHECKPOINT_SOURCE}, and put them under '
    f'{CHECKPOINT_DIR}/; a Hugging Face Hub snapshot folder of shi-labs/nat-* or '
    'shi-labs/dinat-* loads too. Or train from scratch with '
    '--cfg-options model.backbone.init_cfg=None')


def checkpoint_for_file(file_name):
    """The name and entry of :data:`PUBLISHED_CHECKPOINTS` whose file is ``file_name``,
    or (None, None)."""
    for name, entry in PUBLISHED_CHECKPOINTS.items():
        if entry['file'] == file_name:
            return name, entry
    return None, None
