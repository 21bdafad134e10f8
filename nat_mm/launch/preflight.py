"""Checks and adjustments applied to a config before MMEngine's Runner is built.

- :func:`check_dataset_paths`: a dataset that is not where the config expects
  it fails at once with the expected layout and the ways to fix it, instead
  of deep inside dataset construction.
- :func:`adapt_config_to_device`: the published configs train in fp16 with
  SyncBN on GPUs; on a CPU-only machine they run in fp32 (AmpOptimWrapper ->
  OptimWrapper), and a distributed CPU run uses the gloo backend, BN instead of
  SyncBN and a DDP wrapper without device ids.
- :func:`init_distributed`: sets up the process group for the CPU case, where
  MMEngine's own initialisation would select a CUDA device.

Only torch and mmengine are needed here.
"""
import logging
import os
import os.path as osp
import subprocess

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


def _expected_paths(dataset_cfg):
    """[(path, what it is)] that a dataset config reads."""
    data_root = dataset_cfg.get('data_root') or ''
    expected = [(data_root, 'data_root')] if data_root else []
    if dataset_cfg.get('ann_file'):
        expected.append((_join(data_root, dataset_cfg['ann_file']), 'ann_file'))
    for name, prefix in (dataset_cfg.get('data_prefix') or {}).items():
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
            if expected[0][1] == 'data_root' and absent[:1] == [expected[0][0]]:
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
    task = DEMO_TASK_BY_SCOPE.get(cfg.get('default_scope'), 'seg|det')
    raise FileNotFoundError(
        'Dataset not found where the config expects it. Missing:\n  ' + '\n  '.join(missing) +
        '\nExpected layout:\n  ' + '\n  '.join(layouts) +
        '\nPut the dataset there (a symbolic link works), or point the config at it with\n'
        f'  --cfg-options {" ".join(dict.fromkeys(root_keys))}\n'
        f'or run the built-in demo on generated data: python tools/demo.py --task {task}')


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
