"""tools/train.py, tools/test.py and tools/dist_train.sh: resuming and the errors for a
missing dataset, checkpoint or process count (distributed training runs in
test_cluster_launch.py)."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from nat_mm.launch import check_dataset_paths

REPO_ROOT = Path(__file__).resolve().parents[2]
SEG_DEMO = str(REPO_ROOT / 'configs' / 'demo' / 'upernet_nat_demo.py')


def _logged_iterations(work_dir, train_log):
    """Iterations logged by the most recent run in ``work_dir``."""
    log_dir = sorted(p for p in Path(work_dir).iterdir() if p.is_dir())[-1]
    return [iteration for iteration, _ in train_log(log_dir)]


def _lr_after(cfg, steps):
    """Learning rate after ``steps`` iterations of the config's schedule, from scratch."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    init_default_scope(cfg.default_scope)
    optim_wrapper = build_optim_wrapper(torch.nn.Linear(1, 1), copy.deepcopy(cfg.optim_wrapper))
    schedulers = [PARAM_SCHEDULERS.build(dict(scheduler, optimizer=optim_wrapper))
                  for scheduler in copy.deepcopy(cfg.param_scheduler)]
    for _ in range(steps):
        for scheduler in schedulers:
            scheduler.step()
    return optim_wrapper.get_lr()['lr'][0]


@pytest.mark.slow
def test_resume_continues_iterations_optimizer_and_schedule(tmp_path, tiny_ade, load_tool,
                                                            seg_demo_options, train_log):
    train = load_tool('train')
    work_dir = str(tmp_path / 'work')
    first = train.main([SEG_DEMO, '--work-dir', work_dir, '--cfg-options',
                        *seg_demo_options(tiny_ade, max_iters=2)])
    assert first.iter == 2 and (tmp_path / 'work' / 'iter_2.pth').is_file()

    resumed = train.main([SEG_DEMO, '--work-dir', work_dir, '--resume', '--cfg-options',
                          *seg_demo_options(tiny_ade, max_iters=4)])
    assert resumed.iter == 4
    assert _logged_iterations(work_dir, train_log) == [3, 4]  # continued, not restarted
    # AdamW's step counters include the two iterations before the stop
    steps = {int(state['step']) for state in resumed.optim_wrapper.optimizer.state.values()}
    assert steps == {4}
    # the warm-up continued from where it stopped
    lr = resumed.optim_wrapper.get_lr()['lr'][0]
    assert lr == pytest.approx(_lr_after(resumed.cfg, 4))
    assert lr != pytest.approx(_lr_after(resumed.cfg, 2))

    # an explicit checkpoint path resumes too
    again = train.main([SEG_DEMO, '--work-dir', str(tmp_path / 'other'), '--resume',
                        str(tmp_path / 'work' / 'iter_2.pth'), '--cfg-options',
                        *seg_demo_options(tiny_ade, max_iters=3)])
    assert again.iter == 3 and _logged_iterations(tmp_path / 'other', train_log) == [3]


@pytest.mark.parametrize('script, arguments', [
    ('dist_train.sh', [SEG_DEMO, '--work-dir', 'x']),
    ('dist_test.sh', [SEG_DEMO, 'x.pth']),
])
def test_dist_scripts_without_a_gpu_count(script, arguments):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop('GPUS', None)
    process = subprocess.run(['bash', str(REPO_ROOT / 'tools' / script), *arguments], env=env,
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 2
    assert 'the number of GPUS is missing' in process.stderr
    assert f'GPUS=N {REPO_ROOT / "tools" / script}' in process.stderr


@pytest.mark.parametrize('config, expected, demo', [
    ('upernet_nat_tiny_ade20k.py', 'data/ade/ADEChallengeData2016/annotations/training', 'seg'),
    ('mask_rcnn_nat_tiny_coco.py', 'data/coco/annotations/instances_train2017.json', 'det'),
    ('mmpretrain/nat/nat-tiny_8xb128_in1k.py', 'data/imagenet/train', None),
])
def test_missing_dataset(tmp_path, monkeypatch, load_tool, config, expected, demo):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_tool('train').main([str(REPO_ROOT / 'configs' / config)])
    message = str(error.value)
    assert expected in message
    assert '--cfg-options train_dataloader.dataset.data_root=PATH' in message
    if demo:  # the demo that trains the same kind of model on generated data
        assert message.endswith(f'python tools/demo.py --task {demo}')
    else:     # there is no classification demo
        assert 'tools/demo.py' not in message


def test_relocated_dataset_passes_the_check(tiny_ade, load_tool):
    args = load_tool('train').parse_args([
        str(REPO_ROOT / 'configs' / 'upernet_nat_tiny_ade20k.py'), '--cfg-options',
        f'train_dataloader.dataset.data_root={tiny_ade}',
        f'val_dataloader.dataset.data_root={tiny_ade}'])
    check_dataset_paths(load_tool('train').build_config(args), mode='train')


def test_missing_checkpoints(tmp_path, monkeypatch, load_tool):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_tool('test').main([SEG_DEMO, 'missing.pth'])
    assert str(error.value) == ('checkpoint missing.pth does not exist: give the path of a trained '
                                'checkpoint (e.g. WORK_DIR/iter_N.pth of tools/train.py), an '
                                'official .pth file or a Hugging Face Hub folder')
    with pytest.raises(FileNotFoundError) as error:
        load_tool('train').main([SEG_DEMO, '--resume', 'missing.pth'])
    assert str(error.value) == ('--resume: checkpoint missing.pth does not exist: give an existing '
                                'one, or --resume without a path to continue from the latest '
                                'complete one in the work dir')


@pytest.mark.parametrize('config, checkpoint', [
    ('upernet_nat_mini_ade20k.py', 'checkpoints/nat_mini.pth'),
    ('mask_rcnn_dinat_tiny_coco.py', 'checkpoints/dinat_tiny_in1k_224.pth'),
])
def test_missing_pretrained_backbone(tmp_path, monkeypatch, config, checkpoint):
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / config))
    init_default_scope(cfg.default_scope)
    models = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    model = models.build(cfg.model)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        model.init_weights()
    assert checkpoint in str(error.value)
    assert 'model.backbone.init_cfg=None' in str(error.value)


def test_amp_and_auto_scale_lr_options(load_tool):
    train = load_tool('train')
    cfg = train.build_config(train.parse_args([
        str(REPO_ROOT / 'configs' / 'demo' / 'mask_rcnn_nat_demo.py'), '--amp',
        '--auto-scale-lr']))
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    expected = 'AmpOptimWrapper' if torch.cuda.is_available() else 'OptimWrapper'
    assert cfg.optim_wrapper.type == expected  # without CUDA: fp32 fallback
