"""Crash and resume: a training killed with SIGKILL and resumed with --resume ends with the
weights, optimizer state, schedules and iteration of the uninterrupted run, bitwise (CPU).

Two tasks, each through tools/train.py in subprocesses with one thread each (CPU kernels
give the same bits for the same thread count), MAX_ITERS iterations with a checkpoint every
INTERVAL: the demo segmentor (configs/demo/upernet_nat_demo.py, one NAT block per stage, the
tiny ADE20K-like dataset; needs mmseg) and a NAT regressor in MMEngine's Runner alone
(tests/test_tools/nat_regression_task.py, NAT-Mini widths with one block per stage, the
hooks of configs/_base_/nat_runtime.py). What makes the resumed run draw the same random
numbers: MMEngine restores the data order and replays the skipped iterations' data pipeline
(augmentations: numpy); nat_mm's RNGStateHook restores torch's generator (drop path,
dropout).

Kill points: after a checkpoint is complete (during the next iterations), and while a
checkpoint is being written: the run stops itself half-way through writing it
(tests/test_tools/stop_mid_write.py's hook) and is killed there, leaving a cut file, which
--resume must pass over."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from environment import require_module
from nat_mm.launch.hooks import RNG_STATE_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]
SEG_DEMO = str(REPO_ROOT / 'configs' / 'demo' / 'upernet_nat_demo.py')
MAX_ITERS = 6
INTERVAL = 2
#: Seconds a test waits for a training subprocess.
TIMEOUT = 900
#: The NAT regressor's config (MMEngine only); the hooks come from nat_mm's runtime base.
REGRESSION_CONFIG = f'''
_base_ = ['{REPO_ROOT / 'configs' / '_base_' / 'nat_runtime.py'}']
custom_imports = dict(imports=['nat_mm', 'nat_mm.launch.hooks', 'nat_regression_task'],
                      allow_failed_imports=False)
custom_hooks = {{{{_base_.nat_custom_hooks}}}}
default_scope = 'mmengine'
model = dict(type='NATRegressor', backbone=dict(type='NAT', arch='mini', depths=(1, 1, 1, 1),
                                                drop_path_rate=0.3))
train_dataloader = dict(dataset=dict(type='RandomImages'), batch_size=2, num_workers=0,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        collate_fn=dict(type='default_collate'))
train_cfg = dict(by_epoch=False, max_iters={MAX_ITERS})
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval={INTERVAL}, by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
randomness = dict(seed=0)
'''


class Task:
    """How to run one of the two tasks: the config and its --cfg-options."""

    def __init__(self, name, config, options):
        self.name, self.config, self.options = name, config, options

    def command(self, train_script, work_dir, *extra):
        return [sys.executable, str(train_script), self.config, '--work-dir', str(work_dir),
                *extra, *(['--cfg-options', *self.options] if self.options else [])]


@pytest.fixture(scope='module', params=['demo_segmentor', 'nat_regressor'])
def task(request, tmp_path_factory):
    if request.param == 'nat_regressor':
        config = tmp_path_factory.mktemp('config') / 'nat_regressor.py'
        config.write_text(REGRESSION_CONFIG)
        return Task(request.param, str(config), [])
    require_module('mmseg')    # the demo segmentor's
    data_root = request.getfixturevalue('tiny_ade')
    options = [f'{split}_dataloader.dataset.data_root={data_root}'
               for split in ('train', 'val', 'test')] + [
        f'train_cfg.max_iters={MAX_ITERS}', f'train_cfg.val_interval={MAX_ITERS}',
        f'default_hooks.checkpoint.interval={INTERVAL}', 'default_hooks.logger.interval=1',
        'train_dataloader.batch_size=2', 'model.backbone.depths=[1,1,1,1]']
    return Task(request.param, SEG_DEMO, options)


def _environment():
    """One thread; tests/test_tools on the path for the regressor's custom_imports."""
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get('PYTHONPATH'))
                           if p)
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONPATH=path)


def _train(command):
    process = subprocess.run(command, env=_environment(), capture_output=True, text=True,
                             timeout=TIMEOUT)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-4000:]
    return output


def _start(command, log):
    return subprocess.Popen(command, env=_environment(), stdout=log, stderr=subprocess.STDOUT)


def _kill_when(process, condition):
    """SIGKILL ``process`` as soon as ``condition()`` holds; it must still be running."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert process.poll() is None, 'the training ended before the kill point'
        assert time.monotonic() < deadline, 'the kill point never came'
        time.sleep(0.0005)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def assert_same_training_state(got_path, expected_path):
    got, expected = _load(got_path), _load(expected_path)
    assert got['meta']['iter'] == expected['meta']['iter'] == MAX_ITERS
    assert got['state_dict'].keys() == expected['state_dict'].keys()
    for key, value in expected['state_dict'].items():
        assert torch.equal(got['state_dict'][key], value), key
    got_optim, expected_optim = got['optimizer'], expected['optimizer']
    assert got_optim['param_groups'] == expected_optim['param_groups']
    assert got_optim['state'].keys() == expected_optim['state'].keys()
    for index, state in expected_optim['state'].items():
        for name, value in state.items():
            assert torch.equal(got_optim['state'][index][name], value), (index, name)
    assert got['param_schedulers'] == expected['param_schedulers']
    assert torch.equal(got[RNG_STATE_KEY]['cpu'], expected[RNG_STATE_KEY]['cpu'])


@pytest.fixture(scope='module')
def straight(task, tool_path, tmp_path_factory):
    """The uninterrupted run's work dir."""
    work_dir = tmp_path_factory.mktemp(f'straight_{task.name}')
    _train(task.command(tool_path('train'), work_dir))
    return work_dir


@pytest.mark.slow
def test_killed_after_a_checkpoint_resumes_to_the_same_state(straight, task, tool_path,
                                                            tmp_path):
    work_dir = tmp_path / 'work'
    command = task.command(tool_path('train'), work_dir)
    pointer = work_dir / 'last_checkpoint'
    with open(tmp_path / 'killed.log', 'w') as log:
        process = _start(command, log)
        _kill_when(process, lambda: pointer.is_file() and
                   pointer.read_text().endswith(f'iter_{INTERVAL}.pth'))
    assert not (work_dir / f'iter_{MAX_ITERS}.pth').exists()

    output = _train(task.command(tool_path('train'), work_dir, '--resume'))
    assert 'Auto resumed from the latest checkpoint' in output
    assert_same_training_state(work_dir / f'iter_{MAX_ITERS}.pth',
                               straight / f'iter_{MAX_ITERS}.pth')


def _stopping_mid_write(task, tmp_path, filename, marker):
    """``task`` with tests/test_tools/stop_mid_write.py's hook added: the run stops itself
    half-way through writing ``filename`` and waits to be killed (a config beside the
    task's that inherits it)."""
    cfg = Config.fromfile(task.config, import_custom_modules=False).to_dict()
    imports = dict(cfg['custom_imports'])
    imports['imports'] = [*imports['imports'], 'stop_mid_write']
    hooks = [*cfg.get('custom_hooks', []),
             dict(type='StopWhileWritingCheckpoint', filename=filename, marker=str(marker))]
    config = tmp_path / f'{Path(task.config).stem}_stop_mid_write.py'
    config.write_text(f'_base_ = [{task.config!r}]\ncustom_imports = {imports!r}\n'
                      f'custom_hooks = {hooks!r}\n')
    return Task(task.name, str(config), task.options)


@pytest.mark.slow
def test_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(
        straight, task, tool_path, tmp_path):
    work_dir = tmp_path / 'work'
    second = work_dir / f'iter_{2 * INTERVAL}.pth'
    marker = tmp_path / 'stopped_mid_write'
    stopping = _stopping_mid_write(task, tmp_path, second.name, marker)
    with open(tmp_path / 'killed.log', 'w') as log:
        process = _start(stopping.command(tool_path('train'), work_dir), log)
        _kill_when(process, marker.exists)
    written, total = map(int, marker.read_text().split())
    pointer = (work_dir / 'last_checkpoint').read_text()
    print(f'killed while writing {second.name}: {written} of {total} bytes written; '
          f'last_checkpoint names {Path(pointer).name}')
    assert second.stat().st_size == written == total // 2 > 0    # the kill came mid-write
    assert pointer.endswith(f'iter_{INTERVAL}.pth')    # MMEngine updates it after the file

    # resuming from the damaged file names it and stops, before unpickling anything
    explicit = subprocess.run(task.command(tool_path('train'), work_dir, '--resume',
                                       str(second)),
                              env=_environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert explicit.returncode != 0
    assert f'ValueError: --resume: checkpoint {second} is damaged: it ' in explicit.stderr
    assert f'--resume {work_dir / f"iter_{INTERVAL}.pth"}.' in explicit.stderr
    assert 'Unpickl' not in explicit.stderr and 'PytorchStreamReader' not in explicit.stderr

    # the pointer still names the last complete checkpoint: --resume continues from it
    output = _train(task.command(tool_path('train'), work_dir, '--resume'))
    assert f'Auto resumed from the latest checkpoint {work_dir / f"iter_{INTERVAL}.pth"}' \
        in output
    assert_same_training_state(work_dir / f'iter_{MAX_ITERS}.pth',
                               straight / f'iter_{MAX_ITERS}.pth')


#: What --resume does with the files and what the loss hook does are the same for every
#: task: the tests of them run the cheaper one.
ONE_TASK = pytest.mark.parametrize('task', ['nat_regressor'], indirect=True)


@pytest.mark.slow
@ONE_TASK
def test_a_damaged_latest_checkpoint_is_passed_over(straight, task, tool_path, tmp_path):
    """The latest checkpoint named by last_checkpoint is cut (its writer killed after the
    pointer was written, or the file damaged since): --resume uses the one before it."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    for step in (INTERVAL, 2 * INTERVAL):
        (work_dir / f'iter_{step}.pth').write_bytes((straight / f'iter_{step}.pth').read_bytes())
    latest = work_dir / f'iter_{2 * INTERVAL}.pth'
    latest.write_bytes(latest.read_bytes()[:latest.stat().st_size // 3])
    (work_dir / 'last_checkpoint').write_text(str(latest))

    output = _train(task.command(tool_path('train'), work_dir, '--resume'))
    assert f'--resume: the latest checkpoint {latest} (named by ' in output
    assert f'resuming from the latest complete checkpoint {work_dir / f"iter_{INTERVAL}.pth"}' \
        in output
    assert_same_training_state(work_dir / f'iter_{MAX_ITERS}.pth',
                               straight / f'iter_{MAX_ITERS}.pth')


@ONE_TASK
def test_a_non_finite_loss_stops_the_run_naming_the_iteration(task, tool_path, tmp_path):
    """With lr 1e30 the first AdamW step makes the weights overflow: iteration 2's loss is
    NaN, and the run stops before iteration 2's checkpoint."""
    command = task.command(tool_path('train'), tmp_path)
    command += [] if '--cfg-options' in command else ['--cfg-options']
    process = subprocess.run(command + ['optim_wrapper.optimizer.lr=1e30'],
                             env=_environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert process.returncode != 0
    assert 'FloatingPointError: The training loss is nan at iteration 2' in process.stderr
    assert not (tmp_path / f'iter_{INTERVAL}.pth').exists()
