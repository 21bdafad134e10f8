"""The run's device and processes: GPU recipes adapted to a CPU-only machine, and the
process group of a distributed CPU run.

- :func:`adapt_config_to_device`: the published configs train in fp16 with
  SyncBN on GPUs; on a CPU-only machine they run in fp32 (AmpOptimWrapper ->
  OptimWrapper), and a distributed CPU run uses the gloo backend, BN instead of
  SyncBN and a DDP wrapper without device ids.
- :func:`init_distributed` / :func:`shutdown_distributed`: the process group for
  the CPU case, where MMEngine's own initialisation would select a CUDA device.
"""
import logging
import os
import subprocess

import torch
import torch.distributed as dist
from mmengine.logging import print_log


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
