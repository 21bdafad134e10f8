"""Dataset checks applied to a config before MMEngine's Runner is built.

- :func:`check_dataset_paths`: a dataset that is not where the config expects
  it fails at once with the expected layout and the ways to fix it, instead
  of deep inside dataset construction.
- :func:`check_dataset_files`: annotation JSON that does not parse, and
  images or label maps that are empty, not images or cut short, fail before
  training with the files named, instead of an error (or a silently
  half-grey image) hours into the run.
"""
import json
import os
import os.path as osp

#: Dataloaders a run reads, by Runner method.
LOADERS_BY_MODE = {
    'train': ('train_dataloader', 'val_dataloader'),
    'test': ('test_dataloader', ),
}


def _leaf_datasets(dataset_cfg, key):
    """Yield (config key, dataset cfg) of the datasets inside dataset wrappers."""
    if 'datasets' in dataset_cfg:  # ConcatDataset and friends
        for index, child in enumerate(dataset_cfg['datasets']):
            yield from _leaf_datasets(child, f'{key}.datasets.{index}')
    elif 'dataset' in dataset_cfg:  # RepeatDataset, ClassBalancedDataset, ...
        yield from _leaf_datasets(dataset_cfg['dataset'], f'{key}.dataset')
    else:
        yield key, dataset_cfg


def _join(root, path):
    return path if not root or osp.isabs(path) else osp.join(root, path)


def _data_prefixes(dataset_cfg):
    """{name: folder} a dataset config reads its images from, relative to its data_root.

    mmdet / mmseg give a dict (``img``, ``seg_map``, ...); MMPretrain's datasets also take
    one folder as a string, and its ImageNet-style datasets read the folder named by
    ``split`` ('train', 'val') when ``data_prefix`` is empty.
    """
    prefix = dataset_cfg.get('data_prefix') or dataset_cfg.get('split') or {}
    return {'img_path': prefix} if isinstance(prefix, str) else dict(prefix)


def _expected_paths(dataset_cfg):
    """[(path, what it is)] that a dataset config reads."""
    data_root = dataset_cfg.get('data_root') or ''
    expected = [(data_root, 'data_root')] if data_root else []
    if dataset_cfg.get('ann_file'):
        expected.append((_join(data_root, dataset_cfg['ann_file']), 'ann_file'))
    for name, prefix in _data_prefixes(dataset_cfg).items():
        if prefix:
            expected.append((_join(data_root, prefix), f'data_prefix.{name}'))
    return expected


def _evaluator_files(cfg, loader_key):
    """[(config key, path)] of annotation files the matching evaluator reads (e.g. CocoMetric)."""
    evaluator_key = loader_key.replace('_dataloader', '_evaluator')
    evaluators = cfg.get(evaluator_key)
    if not evaluators:
        return []
    if isinstance(evaluators, dict):
        return [(f'{evaluator_key}.ann_file', evaluators['ann_file'])
                ] if evaluators.get('ann_file') else []
    return [(f'{evaluator_key}.{i}.ann_file', evaluator['ann_file'])
            for i, evaluator in enumerate(evaluators) if evaluator.get('ann_file')]


def check_dataset_paths(cfg, mode='train', alternative=None):
    """Raise if a dataset the run needs is not where the config expects it.

    Args:
        cfg (mmengine.Config): the full config.
        mode: 'train' (checks train and val data) or 'test' (test data).
        alternative (str, optional): the error's last line, after the fixes:
            e.g. the caller's command that runs without the dataset.

    Raises:
        FileNotFoundError: naming the missing paths, the layout the config
            expects, the ``--cfg-options`` keys that relocate it and
            ``alternative``.
    """
    if mode not in LOADERS_BY_MODE:
        raise ValueError(f'mode must be one of {sorted(LOADERS_BY_MODE)}, got {mode!r}')
    missing, layouts, root_keys = [], [], []
    for loader_key in LOADERS_BY_MODE[mode]:
        loader = cfg.get(loader_key)
        if not loader or 'dataset' not in loader:
            continue
        for dataset_key, dataset_cfg in _leaf_datasets(loader['dataset'], f'{loader_key}.dataset'):
            expected = _expected_paths(dataset_cfg)
            absent = [path for path, _ in expected if not osp.exists(path)]
            if absent and expected[0][1] == 'data_root' and absent[0] == expected[0][0]:
                absent = absent[:1]  # everything under a missing data_root is missing too
            if absent:
                missing.extend(f'{path}  ({dataset_key})' for path in absent)
                layouts.append(f'{dataset_key} ({dataset_cfg.get("type", "dataset")}):\n' +
                               '\n'.join(f'    {path}  <- {what}' for path, what in expected))
                root_keys.append(f'{dataset_key}.data_root=PATH')
        for key, path in _evaluator_files(cfg, loader_key):
            if not osp.exists(path):
                missing.append(f'{path}  ({key})')
                root_keys.append(f'{key}=PATH')
    if not missing:
        return
    raise FileNotFoundError(
        'Dataset not found where the config expects it. Missing:\n  ' + '\n  '.join(missing) +
        '\nExpected layout:\n  ' + '\n  '.join(layouts) +
        '\nPut the dataset there (a symbolic link works), or point the config at it with\n'
        f'  --cfg-options {" ".join(dict.fromkeys(root_keys))}' +
        (f'\n{alternative}' if alternative else ''))


#: What the dataset check reads of an image or label map, by suffix: (format, first bytes,
#: bytes found near the end of a complete file, their name).
IMAGE_SIGNATURES = {
    '.jpg': ('JPEG', b'\xff\xd8\xff', b'\xff\xd9', 'end-of-image marker FF D9'),
    '.jpeg': ('JPEG', b'\xff\xd8\xff', b'\xff\xd9', 'end-of-image marker FF D9'),
    '.png': ('PNG', b'\x89PNG\r\n\x1a\n', b'IEND\xaeB`\x82', 'IEND chunk'),
}
#: The end marker must lie in this many final bytes (some writers pad after it).
_TAIL_BYTES = 4096
#: Damaged files listed in one error at most.
_LISTED = 20


def image_damage(path):
    """Why the image or label map at ``path`` cannot be read whole, or None.

    Reads only its first and last bytes: an empty file, a file whose content
    is not of the format its suffix names (e.g. text or HTML saved as .jpg),
    and a JPEG or PNG without its end marker (cut short by an interrupted
    download, copy or extraction). Damage inside a complete file is not seen.
    """
    size = osp.getsize(path)
    if size == 0:
        return 'empty file (0 bytes)'
    signature = IMAGE_SIGNATURES.get(osp.splitext(path)[1].lower())
    if signature is None:
        return None
    name, head, end, end_name = signature
    with open(path, 'rb') as f:
        first = f.read(max(8, len(head)))
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
    if not first.startswith(head):
        return f'not a {name} image: it starts with {first!r}'
    if end not in tail:
        return f'{name} image cut short: no {end_name} at its end ({size} bytes)'
    return None


def _json_damage(path):
    try:
        with open(path, 'rb') as f:
            json.load(f)
    except UnicodeDecodeError as error:
        return f'not text (UTF-8): {error}'
    except json.JSONDecodeError as error:
        end = ' (at its end: the file was cut short)' if error.pos >= osp.getsize(path) else ''
        return f'not valid JSON: {error.msg} at line {error.lineno} column {error.colno}{end}'
    return None


def _files_under(folder):
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            yield osp.join(root, name)


def check_dataset_files(cfg, mode='train'):
    """Raise if an annotation file or an image of a dataset the run needs is damaged.

    Run after :func:`check_dataset_paths`. Every JSON ``ann_file`` of the
    datasets and of the evaluators is parsed (each once); every file in the
    ``data_prefix`` folders (images, label maps) is checked with
    :func:`image_damage`.

    Raises:
        ValueError: one error naming every damaged file (the first
            :data:`_LISTED`), what is wrong with it and what to do.
    """
    if mode not in LOADERS_BY_MODE:
        raise ValueError(f'mode must be one of {sorted(LOADERS_BY_MODE)}, got {mode!r}')
    json_files, folders = {}, {}
    for loader_key in LOADERS_BY_MODE[mode]:
        loader = cfg.get(loader_key)
        if not loader or 'dataset' not in loader:
            continue
        for dataset_key, dataset_cfg in _leaf_datasets(loader['dataset'], f'{loader_key}.dataset'):
            for path, what in _expected_paths(dataset_cfg):
                if what == 'ann_file' and path.endswith('.json'):
                    json_files.setdefault(path, f'{dataset_key}.ann_file')
                elif what.startswith('data_prefix.') and osp.isdir(path):
                    folders.setdefault(path, f'{dataset_key}.{what}')
        for key, path in _evaluator_files(cfg, loader_key):
            if path.endswith('.json'):
                json_files.setdefault(path, key)
    problems = []
    for path, key in json_files.items():
        damage = _json_damage(path)
        if damage:
            problems.append(f'{path}  ({key}): {damage}')
    for folder, key in folders.items():
        for path in _files_under(folder):
            damage = image_damage(path)
            if damage:
                problems.append(f'{path}  ({key}): {damage}')
    if not problems:
        return
    more = f'\n  ... and {len(problems) - _LISTED} more' if len(problems) > _LISTED else ''
    raise ValueError(
        f'{len(problems)} damaged dataset file(s), found before training:\n  ' +
        '\n  '.join(problems[:_LISTED]) + more +
        '\nReplace each with a good copy (download or extract the dataset again, or rerun the '
        'script that made it), or remove it (an image together with its annotation).')
