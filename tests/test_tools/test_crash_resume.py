"""Crash and resume: a training killed with SIGKILL and resumed with --resume ends with the
weights, optimizer state, schedules and iteration of the uninterrupted run, bitwise (CPU).

The demo segmentor (configs/demo/upernet_nat_demo.py, one NAT block per stage) trains
MAX_ITERS iterations on a tiny dataset with a checkpoint every INTERVAL, in subprocesses
with one thread each (CPU kernels give the same bits for the same thread count). What makes
the resumed run draw the same random numbers: MMEngine restores the data order and replays
the skipped iterations' data pipeline (augmentations: numpy); nat_mm's RNGStateHook (on in
the configs) restores torch's generator (drop path, dropout).

Kill points: after a checkpoint is complete (during the next iterations), and while a
checkpoint is being written (the file exists, its writer is killed at once: a cut or empty
file is left, which --resume must pass over)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SEG_DEMO = str(REPO_ROOT / 'configs' / 'demo' / 'upernet_nat_demo.py')
MAX_ITERS = 6
INTERVAL = 2
#: Seconds a test waits for a training subprocess.
TIMEOUT = 900


def _options(data_root):
    """--cfg-options: the tiny dataset, MAX_ITERS iterations, a checkpoint every INTERVAL,
    one NAT block per stage."""
    return [f'{split}_dataloader.dataset.data_root={data_root}'
            for split in ('train', 'val', 'test')] + [
        f'train_cfg.max_iters={MAX_ITERS}', f'train_cfg.val_interval={MAX_ITERS}',
        f'default_hooks.checkpoint.interval={INTERVAL}', 'default_hooks.logger.interval=1',
        'train_dataloader.batch_size=2', 'model.backbone.depths=[1,1,1,1]']


def _command(train_script, work_dir, data_root, *extra):
    return [sys.executable, str(train_script), SEG_DEMO, '--work-dir', str(work_dir), *extra,
            '--cfg-options', *_options(data_root)]


def _environment():
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


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
    assert torch.equal(got['nat_mm_rng_state']['cpu'], expected['nat_mm_rng_state']['cpu'])


@pytest.fixture(scope='module')
def straight(tool_path, tiny_ade, tmp_path_factory):
    """The uninterrupted run's work dir."""
    work_dir = tmp_path_factory.mktemp('straight')
    _train(_command(tool_path('train'), work_dir, tiny_ade))
    return work_dir


def test_killed_after_a_checkpoint_resumes_to_the_same_state(straight, tool_path, tiny_ade,
                                                            tmp_path):
    work_dir = tmp_path / 'work'
    command = _command(tool_path('train'), work_dir, tiny_ade)
    pointer = work_dir / 'last_checkpoint'
    with open(tmp_path / 'killed.log', 'w') as log:
        process = _start(command, log)
        _kill_when(process, lambda: pointer.is_file() and
                   pointer.read_text().endswith(f'iter_{INTERVAL}.pth'))
    assert not (work_dir / f'iter_{MAX_ITERS}.pth').exists()

    output = _train(_command(tool_path('train'), work_dir, tiny_ade, '--resume'))
    assert 'Auto resumed from the latest checkpoint' in output
    assert_same_training_state(work_dir / f'iter_{MAX_ITERS}.pth',
                               straight / f'iter_{MAX_ITERS}.pth')


def test_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(
        straight, tool_path, tiny_ade, tmp_path):
    work_dir = tmp_path / 'work'
    command = _command(tool_path('train'), work_dir, tiny_ade)
    second = work_dir / f'iter_{2 * INTERVAL}.pth'
    with open(tmp_path / 'killed.log', 'w') as log:
        process = _start(command, log)
        _kill_when(process, second.exists)
    size, complete_size = second.stat().st_size, (straight / second.name).stat().st_size
    pointer = (work_dir / 'last_checkpoint').read_text()
    print(f'killed while writing {second.name}: {size} of {complete_size} bytes written; '
          f'last_checkpoint names {Path(pointer).name}')
    assert size < complete_size                # the kill came while the file was written
    assert pointer.endswith(f'iter_{INTERVAL}.pth')    # MMEngine updates it after the file

    # resuming from the damaged file names it and stops, before unpickling anything
    explicit = subprocess.run(_command(tool_path('train'), work_dir, tiny_ade, '--resume',
                                       str(second)),
                              env=_environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert explicit.returncode != 0
    assert f'ValueError: --resume: checkpoint {second} is damaged: it ' in explicit.stderr
    assert f'--resume {work_dir / f"iter_{INTERVAL}.pth"}.' in explicit.stderr
    assert 'Unpickl' not in explicit.stderr and 'PytorchStreamReader' not in explicit.stderr

    # the pointer still names the last complete checkpoint: --resume continues from it
    output = _train(_command(tool_path('train'), work_dir, tiny_ade, '--resume'))
    assert f'Auto resumed from the latest checkpoint {work_dir / f"iter_{INTERVAL}.pth"}' \
        in output
    assert_same_training_state(work_dir / f'iter_{MAX_ITERS}.pth',
                               straight / f'iter_{MAX_ITERS}.pth')


def test_a_damaged_latest_checkpoint_is_passed_over(straight, tool_path, tiny_ade, tmp_path):
    """The latest checkpoint named by last_checkpoint is cut (its writer killed after the
    pointer was written, or the file damaged since): --resume uses the one before it."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    for step in (INTERVAL, 2 * INTERVAL):
        (work_dir / f'iter_{step}.pth').write_bytes((straight / f'iter_{step}.pth').read_bytes())
    latest = work_dir / f'iter_{2 * INTERVAL}.pth'
    latest.write_bytes(latest.read_bytes()[:latest.stat().st_size // 3])
    (work_dir / 'last_checkpoint').write_text(str(latest))

    output = _train(_command(tool_path('train'), work_dir, tiny_ade, '--resume'))
    assert f'--resume: the latest checkpoint {latest} (named by ' in output
    assert f'resuming from the latest complete checkpoint {work_dir / f"iter_{INTERVAL}.pth"}' \
        in output
    assert_same_training_state(work_dir / f'iter_{MAX_ITERS}.pth',
                               straight / f'iter_{MAX_ITERS}.pth')


def test_a_non_finite_loss_stops_the_run_naming_the_iteration(load_tool, tiny_ade, tmp_path):
    """With lr 1e30 the first AdamW step makes the weights overflow: iteration 2's loss is
    NaN, and the run stops before iteration 2's checkpoint."""
    with pytest.raises(FloatingPointError) as error:
        load_tool('train').main([SEG_DEMO, '--work-dir', str(tmp_path), '--cfg-options',
                                 *_options(tiny_ade), 'optim_wrapper.optimizer.lr=1e30'])
    assert str(error.value).startswith('The training loss is nan at iteration 2 (non-finite '
                                       'terms: decode.loss_ce=nan')
    assert not (tmp_path / f'iter_{INTERVAL}.pth').exists()
