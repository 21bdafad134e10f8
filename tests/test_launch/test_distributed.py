"""The run's device and processes (nat_mm.launch.distributed): CPU fallbacks of GPU
recipes, the process group of a distributed CPU run."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config

from nat_mm.launch import adapt_config_to_device, init_distributed, shutdown_distributed

needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(),
                                    reason='the CPU fallbacks are no-ops with CUDA')


def _gpu_recipe():
    return Config(dict(
        optim_wrapper=dict(type='AmpOptimWrapper', loss_scale='dynamic',
                           optimizer=dict(type='AdamW', lr=1e-4)),
        env_cfg=dict(dist_cfg=dict(backend='nccl')),
        model=dict(type='EncoderDecoder',
                   decode_head=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
                   roi_head=dict(bbox_head=[dict(norm_cfg=dict(type='SyncBN'))] * 2))))


@needs_cpu_only
def test_cpu_single_process_uses_fp32_and_keeps_the_rest():
    cfg = adapt_config_to_device(_gpu_recipe(), launcher='none')
    assert cfg.optim_wrapper == dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    # single-process runs keep SyncBN: the Runner reverts it to BN itself
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert 'model_wrapper_cfg' not in cfg


@needs_cpu_only
def test_cpu_distributed_uses_gloo_bn_and_cpu_ddp():
    cfg = adapt_config_to_device(_gpu_recipe(), launcher='pytorch')
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert [head.norm_cfg.type for head in cfg.model.roi_head.bbox_head] == ['BN', 'BN']
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_keeps_the_gpu_recipe():
    cfg = adapt_config_to_device(_gpu_recipe(), launcher='pytorch')
    assert cfg.to_dict() == _gpu_recipe().to_dict()


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


@needs_cpu_only
@pytest.mark.parametrize('launcher, environment', [
    ('pytorch', dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0')),
    ('slurm', dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0')),
])
def test_init_distributed_on_cpu(monkeypatch, launcher, environment):
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        # recorded, so that what init_distributed sets is undone after the test
        monkeypatch.setenv(name, '0')
        monkeypatch.delenv(name)
    for name, value in dict(environment, MASTER_ADDR='127.0.0.1',
                            MASTER_PORT=_free_port()).items():
        monkeypatch.setenv(name, value)
    try:
        init_distributed(launcher)
        assert dist.is_initialized()
        assert dist.get_backend() == 'gloo' and dist.get_world_size() == 1
        shutdown_distributed()      # what tools/train.py and test.py do after a run
        assert not dist.is_initialized()
        shutdown_distributed()      # and again: nothing left to destroy, no error
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _standin_scontrol(folder, body):
    """An executable ``folder/scontrol`` running ``body`` (sh), its arguments in folder/args."""
    script = folder / 'scontrol'
    script.write_text(f'#!/bin/sh\necho "$@" > "{folder}/args"\n{body}\n')
    script.chmod(0o755)


@needs_cpu_only
def test_slurm_task_finds_the_first_node_as_mmengine_does(monkeypatch, tmp_path):
    """Without MASTER_ADDR, a Slurm task takes the first host of ``scontrol show hostname
    $SLURM_NODELIST`` (MMEngine's rule): a 1-task world on this machine."""
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR'):
        monkeypatch.setenv(name, '0')
        monkeypatch.delenv(name)
    for name, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
                            SLURM_NODELIST='nat-node[01-02]', MASTER_PORT=_free_port()).items():
        monkeypatch.setenv(name, value)
    _standin_scontrol(tmp_path, 'echo 127.0.0.1; echo nat-node02')
    monkeypatch.setenv('PATH', f'{tmp_path}{os.pathsep}{os.environ["PATH"]}')
    try:
        init_distributed('slurm')
        assert (tmp_path / 'args').read_text() == 'show hostname nat-node[01-02]\n'
        assert os.environ['MASTER_ADDR'] == '127.0.0.1'
        assert (os.environ['RANK'], os.environ['WORLD_SIZE']) == ('0', '1')
        assert dist.is_initialized() and dist.get_world_size() == 1
    finally:
        shutdown_distributed()


@needs_cpu_only
def test_init_distributed_errors(monkeypatch, tmp_path):
    init_distributed('none')
    assert not dist.is_initialized()
    for name, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0').items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv('MASTER_ADDR', raising=False)
    monkeypatch.delenv('SLURM_NODELIST', raising=False)
    with pytest.raises(RuntimeError, match='SLURM_NODELIST is not set .* set MASTER_ADDR'):
        init_distributed('slurm')
    monkeypatch.setenv('SLURM_NODELIST', 'nat-node[01-02]')
    monkeypatch.setenv('PATH', str(tmp_path))       # no scontrol
    with pytest.raises(RuntimeError, match='scontrol is not on the PATH .* set MASTER_ADDR'):
        init_distributed('slurm')
    _standin_scontrol(tmp_path, 'echo "Invalid hostlist: $3" >&2; exit 1')
    with pytest.raises(RuntimeError, match=r'"scontrol show hostname nat-node\[01-02\]" gave '
                                           r'no host \(exit 1: Invalid hostlist: nat-node'):
        init_distributed('slurm')
    assert 'MASTER_ADDR' not in os.environ
    with pytest.raises(ValueError) as error:
        init_distributed('mpi')
    assert str(error.value) == "launcher 'mpi' is not supported on CPU; use pytorch or slurm"
