"""Past one machine: a 2-node torchrun training run on this machine (tools/dist_train.sh with
NNODES=2, one process per node, gloo on 127.0.0.1), and tools/slurm_train.sh / slurm_test.sh
through a stand-in ``srun`` (Slurm is not installable here) that records its arguments and
environment and, for the training, starts the task as a 1-task Slurm job does: with the
SLURM_* variables set, and a stand-in ``scontrol`` that resolves the node list."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from environment import requires_stack

# the trainings run in subprocesses (torchrun, srun) that import mmseg and mmcv
pytestmark = requires_stack('mmcv', 'mmseg')

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / 'tools'
SEG_DEMO = str(REPO_ROOT / 'configs' / 'demo' / 'upernet_nat_demo.py')
NODE_LIST = 'nat-node[01-02]'


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def _clean_environment(**extra):
    """This process's environment without launcher variables a developer may have set."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(('SLURM_', 'MASTER_', 'TORCHELASTIC_'))
           and name not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'GPUS', 'GPUS_PER_NODE',
                            'CPUS_PER_TASK', 'NNODES', 'NODE_RANK', 'PORT', 'SRUN_ARGS')}
    env.update(PYTHON=sys.executable, **extra)
    return env


def _saved_checkpoints(work_dir):
    return sorted(path.name for path in Path(work_dir).glob('*.pth'))


@pytest.mark.slow
def test_two_node_torchrun_training(tmp_path, tiny_ade, seg_demo_options, train_log):
    """Two torchrun agents, node_rank 0 and 1 of --nnodes 2, meet at 127.0.0.1 and train
    the demo segmentor as one world of 2; only rank 0 writes the checkpoint. Node 0 gives
    the process count as MMDetection's second argument, node 1 as GPUS."""
    work_dir = tmp_path / 'work'
    options = ['--work-dir', str(work_dir), '--cfg-options',
               *seg_demo_options(tiny_ade, max_iters=2)]
    # the two "nodes" share this machine's cores: one thread each (torchrun sets this itself
    # only for several processes per node)
    env = _clean_environment(NNODES='2', PORT=_free_port(), MASTER_ADDR='127.0.0.1',
                             OMP_NUM_THREADS='1')
    script = str(TOOLS / 'dist_train.sh')
    nodes = [subprocess.Popen(['bash', script, SEG_DEMO, '1', *options],
                              env=dict(env, NODE_RANK='0'), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True),
             subprocess.Popen(['bash', script, SEG_DEMO, *options],
                              env=dict(env, NODE_RANK='1', GPUS='1'), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=600)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.communicate()
    for rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, f'node {rank}:\n{output[-3000:]}'
        # torchrun gave this node's worker its global rank in a world of 2
        assert 'distributed CPU run uses the gloo backend' in output, f'node {rank}'
    both = ''.join(outputs)
    assert 'Distributed training: True' in outputs[0]
    assert 'GPU number: 2' in outputs[0]            # MMEngine's name for the world size
    assert both.count('Saving checkpoint at 2 iterations') == 1
    assert _saved_checkpoints(work_dir) == ['iter_2.pth']
    log_dir = sorted(p for p in work_dir.iterdir() if p.is_dir())[-1]
    assert [iteration for iteration, _ in train_log(log_dir)] == [1, 2]


# ----- Slurm: a stand-in srun and scontrol -----------------------------------------------

#: Records srun's arguments and environment; with STANDIN_SRUN_RUN=1 it then starts the
#: command as task 0 of a 1-task job. Options come before the command, each one word.
STANDIN_SRUN = '''\
#!{python}
import json, os, sys
arguments = sys.argv[1:]
with open(os.path.join(os.environ['STANDIN_RECORD'], 'srun.json'), 'w') as f:
    json.dump(dict(argv=arguments, env=dict(os.environ)), f)
if os.environ.get('STANDIN_SRUN_RUN') != '1':
    sys.exit(0)
command_start = next(i for i, a in enumerate(arguments) if not a.startswith('-'))
options, command = arguments[:command_start], arguments[command_start:]
if '--ntasks=1' not in options:
    sys.exit('stand-in srun: runs 1-task jobs only, got ' + ' '.join(options))
job_name = [a.split('=', 1)[1] for a in options if a.startswith('--job-name=')][0]
os.environ.update(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
                  SLURM_NODELIST='{node_list}', SLURM_JOB_NAME=job_name)
os.execvp(command[0], command)
'''

#: ``scontrol show hostname LIST``: the first node is this machine; records its arguments.
STANDIN_SCONTROL = '''\
#!/bin/sh
echo "$@" >> "$STANDIN_RECORD/scontrol.args"
[ "$1 $2" = "show hostname" ] || exit 1
echo 127.0.0.1
echo nat-node02
'''


@pytest.fixture
def standin_slurm(tmp_path):
    """(environment with the stand-ins first on the PATH, folder of their records)."""
    bin_dir, record = tmp_path / 'bin', tmp_path / 'record'
    bin_dir.mkdir()
    record.mkdir()
    for name, text in (('srun', STANDIN_SRUN.format(python=sys.executable,
                                                      node_list=NODE_LIST)),
                       ('scontrol', STANDIN_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = _clean_environment(STANDIN_RECORD=str(record),
                             PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    return env, record


def _srun_record(record):
    return json.loads((record / 'srun.json').read_text())


def _run(arguments, env, timeout=60):
    return subprocess.run(['bash', *map(str, arguments)], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_slurm_train_runs_a_one_task_job(tmp_path, standin_slurm, tiny_ade, seg_demo_options,
                                         train_log):
    """srun's command line and environment as MMDetection's script gives them, then
    tools/train.py --launcher slurm trains as rank 0 of 1: the first node's address from
    ``scontrol show hostname $SLURM_NODELIST``, the port from PORT."""
    env, record = standin_slurm
    port = _free_port()
    work_dir = tmp_path / 'work'
    options = ['--cfg-options', *seg_demo_options(tiny_ade, max_iters=1)]
    process = _run([TOOLS / 'slurm_train.sh', 'dev', 'nat_demo', SEG_DEMO, work_dir, *options],
                   dict(env, GPUS='1', PORT=port, SRUN_ARGS='--qos=high --time=10',
                        STANDIN_SRUN_RUN='1', OMP_NUM_THREADS='1'), timeout=600)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-3000:]

    srun = _srun_record(record)
    assert srun['argv'] == [
        '--partition=dev', '--job-name=nat_demo', '--gres=gpu:1', '--ntasks=1',
        '--ntasks-per-node=1', '--cpus-per-task=5', '--kill-on-bad-exit=1', '--qos=high',
        '--time=10', sys.executable, '-u', f'{TOOLS}/train.py', SEG_DEMO, '--work-dir',
        str(work_dir), '--launcher', 'slurm', *options]
    assert srun['env']['MASTER_PORT'] == port
    assert srun['env']['PYTHONPATH'].split(os.pathsep)[0] == f'{TOOLS}/..'
    assert 'MASTER_ADDR' not in srun['env']
    assert (record / 'scontrol.args').read_text() == f'show hostname {NODE_LIST}\n'

    assert 'Distributed launcher: slurm' in output
    assert 'Distributed training: True' in output
    assert output.count('distributed CPU run uses the gloo backend') == 1
    assert _saved_checkpoints(work_dir) == ['iter_1.pth']
    log_dir = sorted(p for p in work_dir.iterdir() if p.is_dir())[-1]
    assert [iteration for iteration, _ in train_log(log_dir)] == [1]


def test_slurm_scripts_command_lines(tmp_path, standin_slurm):
    """More tasks than a node's GPUs: 8 per node by default, GPUS_PER_NODE / CPUS_PER_TASK
    override; test.py gets the checkpoint and the options after it."""
    env, record = standin_slurm
    process = _run([TOOLS / 'slurm_train.sh', 'gpu', 'big', 'cfg.py', 'wd', '--amp'],
                   dict(env, GPUS='16'))
    assert process.returncode == 0, process.stderr
    assert _srun_record(record)['argv'] == [
        '--partition=gpu', '--job-name=big', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1', sys.executable,
        '-u', f'{TOOLS}/train.py', 'cfg.py', '--work-dir', 'wd', '--launcher', 'slurm', '--amp']
    assert _srun_record(record)['env']['MASTER_PORT'] == '29500'

    process = _run([TOOLS / 'slurm_test.sh', 'gpu', 'eval', 'cfg.py', 'iter_8.pth', '--tta'],
                   dict(env, GPUS='8', GPUS_PER_NODE='4', CPUS_PER_TASK='2', PORT='29600'))
    assert process.returncode == 0, process.stderr
    srun = _srun_record(record)
    assert srun['argv'] == [
        '--partition=gpu', '--job-name=eval', '--gres=gpu:4', '--ntasks=8',
        '--ntasks-per-node=4', '--cpus-per-task=2', '--kill-on-bad-exit=1', sys.executable,
        '-u', f'{TOOLS}/test.py', 'cfg.py', 'iter_8.pth', '--launcher', 'slurm', '--tta']
    assert srun['env']['MASTER_PORT'] == '29600'
    assert not (record / 'scontrol.args').exists()   # nothing ran


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_scripts_refuse_bad_arguments(standin_slurm, script):
    env, record = standin_slurm
    process = _run([TOOLS / script, 'dev', 'job', 'cfg.py'], env)
    assert process.returncode == 2
    assert process.stderr.startswith(f'usage: {TOOLS / script} PARTITION JOB_NAME CONFIG ')
    for name, value in (('GPUS', '0'), ('GPUS_PER_NODE', 'two'), ('CPUS_PER_TASK', '-1')):
        process = _run([TOOLS / script, 'dev', 'job', 'cfg.py', 'x'], dict(env, **{name: value}))
        assert process.returncode == 2
        assert f'{name} must be a positive integer, got \'{value}\'' in process.stderr
    assert not (record / 'srun.json').exists()
