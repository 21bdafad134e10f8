"""dev/gpu_check.py (dry run on this CPU machine, its checks, its arguments) and the CUDA
detection of scripts/setup_env.sh."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nat_mm.compat import autocast_supports
from nat_mm.models.presets import ARCH_SETTINGS, resolve_dilations
from nat_mm.ops import na2d

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def gpu_check(load_dev_script):
    return load_dev_script('gpu_check')


def test_dry_run_writes_the_report(tmp_path):
    """The CPU-capable parts end to end: every section in order, op and backbone checks
    passed, the benchmarks skipped as asked (their CPU runs take minutes;
    test_benchmark_na.py and test_benchmark_backbone.py cover them), the demo skipped with
    its reason. Without Triton's interpreter (TRITON_INTERPRET unset), as on a CPU machine:
    the op checks run csr and export; the triton backend's own checks through the
    interpreter take minutes and are tests/test_ops/test_triton_na.py's."""
    out = tmp_path / 'report'
    # without OpenCV, as on the benchmark GPU machine: `import cv2` raises ImportError
    argv = [str(ROOT / 'dev' / 'gpu_check.py'), '--dry-run', '--out', str(out),
            '--skip', 'bench-op', 'bench-backbone']
    script = (f"import runpy, sys; sys.modules['cv2'] = None; sys.argv = {argv!r}; "
              f"runpy.run_path(sys.argv[0], run_name='__main__')")
    env = {name: value for name, value in os.environ.items() if name != 'TRITON_INTERPRET'}
    result = subprocess.run([sys.executable, '-c', script], env=env,
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    data = json.loads((out / 'gpu_check.json').read_text())
    titles = [section['title'].split(':')[0].split(' on ')[0] for section in data['sections']]
    assert titles == ['environment', 'op tests', 'backbone', 'benchmark', 'benchmark', 'demo']
    sections = {section['title']: section for section in data['sections']}
    assert data['summary']['passed'] is True
    environment = '\n'.join(data['sections'][0]['lines'])
    assert f'torch {torch.__version__}' in environment and 'GPU: none' in environment
    assert 'cv2: not installed' in environment and 'not needed by `import nat_mm`' in environment
    ops = data['sections'][1]
    # 2 cases x 5 precisions (4 where this torch's CPU autocast has no float16) + 2
    # large-logit cases per backend, all passed
    assert 'nat_mm backends on cpu: csr, export' in environment
    precisions = 5 if autocast_supports('cpu', torch.float16) else 4
    assert len(ops['checks']) == 2 * (2 * precisions + 2)
    assert all(check['passed'] for check in ops['checks'])
    backbone = data['sections'][2]
    assert [c['passed'] for c in backbone['checks']] == [True] * 4
    for bench in data['sections'][3:5]:
        assert bench['status'] == 'SKIPPED' and bench['skipped'][0]['why'] == '--skip'
    demo = sections['demo: UperNet and Mask R-CNN with AMP']
    assert demo['status'] == 'SKIPPED' and 'needs CUDA' in demo['skipped'][0]['why']
    markdown = (out / 'gpu_check.md').read_text()
    assert markdown.startswith('# nat_mm GPU check: PASS')
    assert '## op tests on cpu: PASS' in markdown


@pytest.mark.parametrize('argv, message', [
    (['--out', 'x'], 'add --dry-run'),
    (['--out', 'x', '--dry-run', '--budget', '0'], '--budget must be > 0'),
    (['--out', 'x', '--dry-run', '--repeats', '0'], '--repeats must be >= 1'),
    (['--out', 'x', '--dry-run', '--skip', 'environment'], "invalid choice: 'environment'"),
])
def test_bad_arguments_are_refused_with_the_fix(gpu_check, capsys, argv, message):
    if argv == ['--out', 'x'] and torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    with pytest.raises(SystemExit):
        gpu_check.parse_args(argv)
    assert message in capsys.readouterr().err


def test_out_must_be_a_folder(gpu_check, capsys, tmp_path):
    (tmp_path / 'file').write_text('')
    with pytest.raises(SystemExit):
        gpu_check.parse_args(['--out', str(tmp_path / 'file'), '--dry-run'])
    assert 'is a file; give a folder' in capsys.readouterr().err


def test_op_check_passes_na2d_and_fails_a_wrong_attention(gpu_check):
    """The op check can fail: an attention that drops the rpb is caught in the output
    and has no rpb gradient; one that ignores the dilation is caught too."""
    device = torch.device('cpu')
    case = gpu_check.SMALL_CASES['small dilated (B2 h3 20x23 d8 k5 dil3)']
    good = gpu_check.op_check(na2d, case, 'float32', device)
    assert max(good['errors'].values()) < good['tol'] and good['finite']

    no_rpb = gpu_check.op_check(lambda q, k, v, kernel, dilation, rpb:
                                na2d(q, k, v, kernel, dilation, None), case, 'float32', device)
    assert no_rpb['errors']['out'] > 10 * no_rpb['tol']
    assert no_rpb['errors']['drpb'] == float('inf')

    no_dilation = gpu_check.op_check(lambda q, k, v, kernel, dilation, rpb:
                                     na2d(q, k, v, kernel, 1, rpb), case, 'bfloat16', device)
    assert no_dilation['errors']['out'] > no_dilation['tol']


def test_packed_inputs_are_views_of_one_qkv_tensor(gpu_check):
    """NAT-sized cases give q, k, v as the model does: strided views of one tensor."""
    case = gpu_check.NAT_CASES['stage1@512 (B2 h2 128x128 d32)']
    (q, k, v, rpb), leaves, grad_out = gpu_check.make_op_inputs(
        case, torch.float32, torch.float32, torch.device('cpu'), seed=0)
    assert q.shape == k.shape == v.shape == grad_out.shape == (2, 2, 128, 128, 32)
    assert not q.is_contiguous() and q.data_ptr() == leaves[0].data_ptr()
    assert rpb.shape == (2, 13, 13) and len(leaves) == 2


def test_dinat_dilations_are_those_of_the_config(gpu_check):
    """DiNAT-T is checked with the preset its UperNet config names (read as text: the config
    needs mmseg to load)."""
    config = (ROOT / 'configs' / 'upernet_dinat_tiny_ade20k.py').read_text()
    assert f"dilations='{gpu_check.DINAT_T_DILATIONS}'" in config
    dilations = resolve_dilations(gpu_check.DINAT_T_DILATIONS, ARCH_SETTINGS['tiny']['depths'])
    assert dilations[0] == [1, 16, 1] and dilations[2] == [1, 2, 1, 3, 1, 4] * 3


def test_run_tool_copies_the_output_and_fails_with_the_tool(gpu_check):
    section = gpu_check.Section('probe')
    lines = gpu_check.run_tool(section, 'analysis_tools/benchmark_na', ['--help'])
    assert section.lines[0] == '$ python tools/analysis_tools/benchmark_na.py --help'
    assert section.lines[1:] == lines and any('--memory-in-process' in line for line in lines)
    with pytest.raises(RuntimeError, match='(?s)exited with status 2:.*--repeats must be >= 1'):
        gpu_check.run_tool(section, 'analysis_tools/benchmark_na', ['--repeats', '0'])


def test_demo_command_runs_few_amp_iterations(gpu_check, tmp_path):
    command = gpu_check.demo_command('seg', tmp_path)
    assert command[1].endswith('tools/demo.py') and command[2:4] == ['--task', 'seg']
    options = command[command.index('--cfg-options') + 1:]
    assert 'optim_wrapper.type=AmpOptimWrapper' in options
    assert 'train_cfg.max_iters=20' in options
    assert gpu_check.demo_command('det', tmp_path)[-5:] == gpu_check.DEMO_TASKS['det']


def _setup_functions(script, env=None, path_prefix=None):
    """Runs ``script`` after sourcing scripts/setup_env.sh (which then only defines its
    functions); returns the completed process."""
    env = dict(os.environ if env is None else env)
    if path_prefix:
        env['PATH'] = f'{path_prefix}:{env["PATH"]}'
    return subprocess.run(['bash', '-c', f'source scripts/setup_env.sh; {script}'], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def _executable(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def test_setup_env_detects_the_gpus_and_their_archs(tmp_path):
    """With an nvidia-smi that lists two GPUs (8.6 and 9.0): device cuda, both archs."""
    _executable(tmp_path / 'bin' / 'nvidia-smi', '\n'.join([
        '#!/bin/sh', 'case "$*" in',
        '  -L) echo "GPU 0: NVIDIA H200 (UUID: a)"; echo "GPU 1: NVIDIA A6000 (UUID: b)";;',
        '  *compute_cap*) printf "9.0\\n8.6\\n9.0\\n";;', '  *) exit 1;;', 'esac', '']))
    env = {k: v for k, v in os.environ.items() if k != 'NAT_MM_DEVICE'}
    result = _setup_functions('echo "$(detect_device) $(gpu_arch_list)"', env, tmp_path / 'bin')
    assert result.stdout.split() == ['cuda', '8.6;9.0'], result.stderr


def test_setup_env_device_override_and_bad_value():
    env = dict(os.environ, NAT_MM_DEVICE='cpu')
    assert _setup_functions('detect_device', env).stdout.strip() == 'cpu'
    env['NAT_MM_DEVICE'] = 'gpu'
    result = _setup_functions('detect_device', env)
    assert result.returncode != 0
    assert "NAT_MM_DEVICE must be auto, cpu or cuda, got 'gpu'" in result.stderr


def test_setup_env_finds_the_toolkit_behind_nvcc_and_its_version(tmp_path):
    """`nvcc` on the PATH is a link into a toolkit (bin/nvcc + include/cuda_runtime.h)."""
    toolkit = tmp_path / 'cuda-12.8'
    _executable(toolkit / 'bin' / 'nvcc',
                '#!/bin/sh\necho "Cuda compilation tools, release 12.8, V12.8.93"\n')
    (toolkit / 'include').mkdir()
    (toolkit / 'include' / 'cuda_runtime.h').write_text('')
    (tmp_path / 'bin').mkdir()
    (tmp_path / 'bin' / 'nvcc').symlink_to(toolkit / 'bin' / 'nvcc')
    env = {k: v for k, v in os.environ.items() if k != 'CUDA_HOME'}
    result = _setup_functions('home=$(find_cuda_home); echo "$home $(nvcc_version "$home")"',
                              env, tmp_path / 'bin')
    assert result.stdout.split() == [str(toolkit), '12.8'], result.stderr
