#: DiNAT-L's 384x384 (kernel 7) ImageNet dilations (official ``dinat_large_384``); the
#: 384x384 kernel-11 model was trained with D224.
DILATIONS_384 = [[1, 13, 1], [1, 6, 1, 6], [1, 3] * 9, [1, 1, 1, 1, 1]]

#: Where the published classification checkpoints come from.
CHECKPOINT_SOURCE = ('the official Neighborhood Attention Transformer project '
                     '(SHI-Labs/Neighborhood-Attention-Transformer, classification checkpoints)')
#: The folder the configs load checkpoints from (relative to the working directory).
CHECKPOINT_DIR = 'checkpoints'
_NAT_URL = 'https://shi-labs.com/projects/nat/checkpoints/CLS/'
_DINAT_URL = 'https://shi-labs.com/projects/dinat/checkpoints/'
_M2F_CONFIGS = ('mask2former_dinat_large_coco_panoptic.py',
                'mask2former_dinat_large_coco_instance.py', 'mask2former_dinat_large_ade20k.py')


def _checkpoint(model, arch, url, kernel_size=7, dilations=None, layer_scale=None,
                resolution=224, dataset='ImageNet-1k', hub_repo=None, hub_size=None, configs=(),
                note=''):
    return dict(file=url.rsplit('/', 1)[-1], model=model, arch=arch, kernel_size=kernel_size,
                dilations=dilations, layer_scale=layer_scale, resolution=resolution,
                dataset=dataset, url=url,
                hub_repo=hub_repo, hub_file='pytorch_model.bin' if hub_repo else None,
                hub_size=hub_size, configs=tuple(configs), note=note)


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
#: by the name ``tools/misc/download_checkpoints.py`` takes. Each entry:
#:
#: - ``file``: its name under ``checkpoints/``, the official file name (what the configs name);
#: - ``model``, ``arch`` (nat_mm's; 'large' is DiNAT-L), ``kernel_size`` (K of its
#:   (heads, 2K-1, 2K-1) rpb tables), ``dilations`` (the preset it was trained with;
#:   None: NAT), ``layer_scale`` (False where the model has none but its arch has:
#:   DiNAT-Small; None: the arch's), ``resolution``, ``dataset`` (its ImageNet data);
#: - ``url``: the official download address (the site publishes no sizes or hashes);
#: - ``hub_repo``, ``hub_file``, ``hub_size``: the Hugging Face Hub copy (Transformers'
#:   layout) and its size as the Hub lists it, or None where there is none;
#: - ``configs``: the configs in configs/ that load it; ``note``: what else to know.
PUBLISHED_CHECKPOINTS = {
    **{f'nat_{arch}': _checkpoint(
        f'NAT-{title}', arch, f'{_NAT_URL}nat_{arch}.pth', hub_repo=f'shi-labs/nat-{arch}-in1k-224',
        hub_size=size, configs=_task_configs('nat', arch))
       for arch, title, size in _SIZES},
    **{f'dinat_{arch}_in1k_224': _checkpoint(
        f'DiNAT-{title}', arch, f'{_DINAT_URL}imagenet1k/dinat_{arch}_in1k_224.pth',
        dilations='224', layer_scale=False if arch == 'small' else None,
        hub_repo=f'shi-labs/dinat-{arch}-in1k-224', hub_size=size,
        configs=_task_configs('dinat', arch))
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
             'authors: loads into the Mask2Former backbone without a resize'),
    'dinat_large_in22k_in1k_224': _checkpoint(
        'DiNAT-L', 'large', f'{_DINAT_URL}imagenet1k/dinat_large_in22k_in1k_224.pth',
        dilations='224', dataset='ImageNet-22k, then ImageNet-1k',
        hub_repo='shi-labs/dinat-large-in22k-in1k-224', hub_size='804 MB'),
    'dinat_large_in22k_in1k_384': _checkpoint(
        'DiNAT-L', 'large', f'{_DINAT_URL}imagenet1k/dinat_large_in22k_in1k_384.pth',
        dilations='384', resolution=384, dataset='ImageNet-22k, then ImageNet-1k',
        hub_repo='shi-labs/dinat-large-in22k-in1k-384', hub_size='804 MB'),
    'dinat_large_in22k_in1k_384_11x11': _checkpoint(
        'DiNAT-L', 'large', f'{_DINAT_URL}imagenet1k/dinat_large_in22k_in1k_384_11x11.pth',
        kernel_size=11, dilations='224', resolution=384, dataset='ImageNet-22k, then ImageNet-1k',
        hub_repo='shi-labs/dinat-large-11x11-in22k-in1k-384', hub_size='805 MB',
        note='kernel 11: loads into the Mask2Former backbone without a resize (fine-tuned on '
             'ImageNet-1k at 384, unlike the ImageNet-22k file the official Mask2Former '
             'configs name)'),
}


def checkpoint_for_file(file_name):
    """The name and entry of :data:`PUBLISHED_CHECKPOINTS` whose file is ``file_name``,
    or (None, None)."""
    for name, entry in PUBLISHED_CHECKPOINTS.items():
        if entry['file'] == file_name:
            return name, entry
    return None, None


def weights_table_markdown():
    """The README's table of published weights, generated from :data:`PUBLISHED_CHECKPOINTS`.

    Returns:
        str: an explanatory paragraph and a Markdown table, self-contained (no
        links into the rest of the document), so that it can move into any page.
    """
    rows = []
    for name, entry in PUBLISHED_CHECKPOINTS.items():
        hub = (f'[`{entry["hub_repo"]}`](https://huggingface.co/{entry["hub_repo"]}) '
               f'({entry["hub_file"]}, {entry["hub_size"]})' if entry['hub_repo'] else 'none')
        used_by = ', '.join(f'`{config}`' for config in entry['configs']) or '-'
        if entry['note']:
            used_by += f'; {entry["note"]}'
        dilations = f'`{entry["dilations"]}`' if entry['dilations'] else 'none (NAT)'
        rows.append(
            f'| `{name}` | {entry["model"]} | {entry["kernel_size"]} | {dilations} | '
            f'{entry["resolution"]} | {entry["dataset"]} | [`{entry["file"]}`]({entry["url"]}) | '
            f'{hub} | {used_by} |')
    return (
        'Every published NAT / DiNAT ImageNet checkpoint that `NAT` loads. This table is '
        'generated from `PUBLISHED_CHECKPOINTS` in `nat_mm/models/presets.py` by '
        '`weights_table_markdown()` (a test compares). '
        '`python tools/misc/download_checkpoints.py NAME ...` (or `--all`, `--list`) puts a file '
        'under `checkpoints/` with the name the configs expect (the official file column): from '
        'the official address or, when that fails, from the Hub copy (with `huggingface_hub` '
        'installed; converted to the official layout on the way). The official site publishes '
        'neither sizes nor hashes: the tool checks the size the server announces. Hub sizes are '
        'as the Hub lists them; the tool checks the SHA-256 the Hub publishes for the file. '
        'Kernel: K of the relative position bias tables, (heads, 2K-1, 2K-1); a model of '
        'another kernel size gets them resized (bicubic) on load, with one log line. '
        'Dilations: the `NAT(dilations=...)` preset the weights were trained with; dilations add '
        'no parameters, and the detection and segmentation configs fine-tune with their own. '
        'The Hub folders (or their `pytorch_model.bin` / `model.safetensors` alone) load as '
        '`init_cfg=dict(type=\'Pretrained\', checkpoint=FOLDER)` too.\n\n'
        '| name | model | kernel | dilations (trained with) | resolution | pretraining | '
        'official file | Hugging Face Hub (file, size) | configs that use it |\n'
        '|---|---|---|---|---|---|---|---|---|\n'
        + '\n'.join(rows) + '\n')
