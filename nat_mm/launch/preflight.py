"""Checks and adjustments applied to a config before MMEngine's Runner is built.

- :func:`check_dataset_paths`: a dataset that is not where the config expects
  it fails at once with the expected layout and the ways to fix it, instead
  of deep inside dataset construction.
- :func:`check_dataset_files`: annotation JSON that does not parse, and
  images or label maps that are empty, not images or cut short, fail before
  training with the files named, instead of an error (or a silently
  half-grey image) hours into the run.
- :func:`resolve_resume_checkpoint`: a damaged checkpoint (cut short by a kill
  while it was written, or empty) is never unpickled: ``--resume`` without a
  path falls back to the latest complete checkpoint, an explicit path stops
  with the file named.
- :func:`adapt_config_to_device`: the published configs train in fp16 with
  SyncBN on GPUs; on a CPU-only machine they run in fp32 (AmpOptimWrapper ->
  OptimWrapper), and a distributed CPU run uses the gloo backend, BN instead of
  SyncBN and a DDP wrapper without device ids.
- :func:`init_distributed`: sets up the process group for the CPU case, where
  MMEngine's own initialisation would select a CUDA device.

Only torch and mmengine are needed here.
"""
import json
import logging
import os
import os.path as osp
import re
import subprocess
import zipfile

import torch
import torch.distributed as dist
from mmengine.logging import print_log

#: Dataloaders a run reads, by Runner method.
LOADERS_BY_MODE = {
    'train': ('train_dataloader', 'val_dataloader'),
    'test': ('test_dataloader', ),
}
#: ``default_scope`` -> ``tools/demo.py --task`` that runs the same kind of model.
DEMO_TASK_BY_SCOPE = {'mmseg': 'seg', 'mmdet': 'det'}


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


def check_dataset_paths(cfg, mode='train'):
    """Raise if a dataset the run needs is not where the config expects it.

    Args:
        cfg (mmengine.Config): the full config.
        mode: 'train' (checks train and val data) or 'test' (test data).

    Raises:
        FileNotFoundError: naming the missing paths, the layout the config
            expects, the ``--cfg-options`` keys that relocate it and the demo
            that runs on generated data.
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
    scope = cfg.get('default_scope')
    # the built-in demos train a segmentor or a detector; there is none for classification
    demo = ('' if scope == 'mmpretrain' else '\nor run the built-in demo on generated data: '
            f'python tools/demo.py --task {DEMO_TASK_BY_SCOPE.get(scope, "seg|det")}')
    raise FileNotFoundError(
        'Dataset not found where the config expects it. Missing:\n  ' + '\n  '.join(missing) +
        '\nExpected layout:\n  ' + '\n  '.join(layouts) +
        '\nPut the dataset there (a symbolic link works), or point the config at it with\n'
        f'  --cfg-options {" ".join(dict.fromkeys(root_keys))}' + demo)


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


#: Checkpoints MMEngine's CheckpointHook writes.
_CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def checkpoint_damage(path):
    """Why the file at ``path`` is not a complete ``torch.save`` checkpoint, or None.

    torch.save writes a zip archive (torch >= 1.6) whose directory is at its
    end: a file cut short (its writer killed) has none. Only the directory is
    read, not the tensors.
    """
    size = osp.getsize(path)
    if size == 0:
        return 'it is empty (0 bytes)'
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return (f'it is not a complete checkpoint ({size} bytes without the zip directory '
                'torch.save writes at the end): it was cut short, e.g. the run was killed '
                'while writing it, or it is another kind of file')
    if not any(name.split('/')[-1] == 'data.pkl' for name in names):
        return 'it is a zip archive without data.pkl, not a checkpoint saved by torch.save'
    return None


def complete_checkpoints(folder):
    """The checkpoints ``iter_N.pth`` / ``epoch_N.pth`` in ``folder`` that are
    complete (:func:`checkpoint_damage`), highest N first."""
    found = []
    for name in os.listdir(folder) if osp.isdir(folder) else []:
        match = _CHECKPOINT_NAME.match(name)
        if match:
            found.append((int(match.group(1)), osp.join(folder, name)))
    return [path for _, path in sorted(found, reverse=True) if checkpoint_damage(path) is None]


def resolve_resume_checkpoint(cfg):
    """Check the checkpoint a resumed run will load, before anything unpickles it.

    ``cfg.resume`` with ``cfg.load_from`` (``--resume PATH``): the file must
    exist and be complete. ``cfg.resume`` alone (``--resume``): MMEngine
    resumes from the file named in ``work_dir/last_checkpoint``; when that
    file is missing, empty, names a missing file or a damaged one, the latest
    complete ``iter_N.pth`` / ``epoch_N.pth`` in the work dir is used instead
    (``cfg.load_from`` is set to it, with a warning naming the damaged file).

    Returns:
        The checkpoint the run will resume from, or None (no resume, or
        nothing to resume from: MMEngine starts from scratch).

    Raises:
        FileNotFoundError: an explicit checkpoint that does not exist.
        ValueError: an explicit checkpoint that is damaged, or a damaged
            latest checkpoint with no complete one to fall back to.
    """
    if not cfg.get('resume'):
        return None
    explicit = cfg.get('load_from')
    if explicit:
        if not osp.isfile(explicit):
            raise FileNotFoundError(f'--resume: checkpoint {explicit} does not exist: give an '
                                    'existing one, or --resume without a path to continue from '
                                    'the latest complete one in the work dir')
        damage = checkpoint_damage(explicit)
        if damage is None:
            return explicit
        others = [path for path in complete_checkpoints(osp.dirname(explicit) or '.')
                  if not osp.samefile(path, explicit)]
        fix = (f'Resume from the latest complete checkpoint beside it: --resume {others[0]}'
               if others else 'There is no complete checkpoint beside it: train without '
               '--resume, or resume from a copy')
        raise ValueError(f'--resume: checkpoint {explicit} is damaged: {damage}. {fix}.')

    pointer = osp.join(cfg.work_dir, 'last_checkpoint')
    latest, problem = None, None
    if osp.isfile(pointer):
        with open(pointer) as f:
            latest = f.read().strip()
        if not latest:
            problem = f'{pointer} is empty'
        elif not osp.isfile(latest):
            problem = f'{pointer} names {latest}, which does not exist'
        else:
            damage = checkpoint_damage(latest)
            if damage is None:
                return latest
            problem = f'the latest checkpoint {latest} (named by {pointer}) is damaged: {damage}'
    candidates = complete_checkpoints(cfg.work_dir)
    if candidates:
        print_log(f'--resume: {problem or f"there is no {pointer}"}; resuming from the latest '
                  f'complete checkpoint {candidates[0]} instead.', logger='current',
                  level=logging.WARNING)
        cfg.load_from = candidates[0]
        return candidates[0]
    if problem is None:
        return None
    raise ValueError(f'--resume: {problem}, and {cfg.work_dir} holds no complete checkpoint '
                     'to resume from instead. Train without --resume (or delete the damaged '
                     'file and the pointer first).')


def _sync_bn_to_bn(node):
    """Replace norm layers of type SyncBN by BN in a nested config; return how many."""
    replaced = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            replaced += 1
        for value in node.values():
            replaced += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            replaced += _sync_bn_to_bn(value)
    return replaced


def adapt_config_to_device(cfg, launcher='none'):
    """Make a GPU recipe runnable on a CPU-only machine (no-op when CUDA is available).

    Modifies ``cfg`` in place and logs one line per change:

    - ``AmpOptimWrapper`` (fp16 needs CUDA) -> ``OptimWrapper`` in fp32;
    - with a launcher other than 'none': gloo backend, SyncBN -> BN (torch's
      SyncBatchNorm only runs on accelerators) and a DDP wrapper without
      ``device_ids``.

    Returns:
        ``cfg``.
    """
    if torch.cuda.is_available():
        return cfg
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper and optim_wrapper.get('type') == 'AmpOptimWrapper':
        optim_wrapper['type'] = 'OptimWrapper'
        for amp_only in ('loss_scale', 'dtype', 'use_fsdp'):
            optim_wrapper.pop(amp_only, None)
        print_log('No CUDA device: AmpOptimWrapper (fp16) replaced by OptimWrapper, '
                  'training runs in fp32 on the CPU.', logger='current', level=logging.WARNING)
    if launcher == 'none':
        return cfg
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    # the Runner's default DDP wrapper passes device_ids=[LOCAL_RANK], which CPU modules reject
    wrapper = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                   find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.update(cfg.get('model_wrapper_cfg') or {})
    cfg['model_wrapper_cfg'] = dict(wrapper, device_ids=None)
    replaced = _sync_bn_to_bn(cfg.get('model'))
    print_log('No CUDA device: distributed CPU run uses the gloo backend' +
              (' and BN instead of SyncBN.' if replaced else '.'), logger='current',
              level=logging.WARNING)
    return cfg


def init_distributed(launcher, backend='gloo'):
    """Initialise the default process group for a CPU run started by ``launcher``.

    MMEngine's ``init_dist`` binds each process to a CUDA device, which a
    CPU-only machine lacks; the Runner skips its own initialisation when a
    group already exists. With CUDA, or launcher 'none', nothing is done.

    Args:
        launcher: 'none', 'pytorch' (torchrun) or 'slurm'.
        backend: process-group backend.
    """
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher == 'slurm':
        if 'MASTER_ADDR' not in os.environ:
            os.environ['MASTER_ADDR'] = _first_slurm_node()
        os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
        os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
        os.environ.setdefault('LOCAL_RANK', os.environ['SLURM_LOCALID'])
        os.environ.setdefault('MASTER_PORT', '29500')
    elif launcher != 'pytorch':
        raise ValueError(f'launcher {launcher!r} is not supported on CPU; use pytorch or slurm')
    dist.init_process_group(backend=backend)


def _first_slurm_node():
    """The first host of the job's node list, as MMEngine's Slurm initialisation takes it:
    ``scontrol show hostname $SLURM_NODELIST``, first line."""
    node_list = os.environ.get('SLURM_NODELIST')
    if not node_list:
        raise RuntimeError('slurm launcher on CPU: SLURM_NODELIST is not set (is this a Slurm '
                           'task?); set MASTER_ADDR to the first node\'s address')
    try:
        result = subprocess.run(['scontrol', 'show', 'hostname', node_list],
                                capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise RuntimeError('slurm launcher on CPU: scontrol is not on the PATH to resolve '
                           f'SLURM_NODELIST={node_list}; set MASTER_ADDR to the first node\'s '
                           'address') from None
    hosts = result.stdout.split()
    if result.returncode != 0 or not hosts:
        raise RuntimeError(f'slurm launcher on CPU: "scontrol show hostname {node_list}" '
                           f'gave no host (exit {result.returncode}: '
                           f'{result.stderr.strip()}); set MASTER_ADDR to the first node\'s '
                           'address')
    return hosts[0]


def shutdown_distributed():
    """Destroys the default process group, if any, once a run has finished.

    A process that exits with a live gloo group can abort in the group's
    destructor ("terminate called without an active exception", SIGABRT),
    which torchrun then reports as a failed run.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
