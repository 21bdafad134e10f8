"""MMEngine checkpoints resume under torch's weights-only ``torch.load``.

A tiny regression model is trained with the real MMEngine ``Runner`` (CPU,
iteration based, AdamW, warm-up + step schedule, validation with a numpy
metric and ``save_best``, as the detection/segmentation recipes do), then a
second Runner resumes from its checkpoint.
"""
import copy
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import nat_mm  # noqa: F401  (importing nat_mm installs the allow-list)
from nat_mm.utils import allow_mmengine_checkpoints, mmengine_checkpoint_globals
from nat_mm.utils.torch_load import HISTORY_BUFFER_STATISTICS

ITERS_BEFORE_RESUME = 4
TOTAL_ITERS = 8
#: torch 2.1-2.3 have no weights-only allow list: MMEngine checkpoints load unrestricted there.
needs_allow_list = pytest.mark.skipif(
    not hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint'),
    reason=f'torch {torch.__version__} has no weights-only allow list to inspect '
           '(torch.serialization.add_safe_globals / get_unsafe_globals_in_checkpoint)')
#: torch.load's default became weights_only=True in torch 2.6.
LOADS_WEIGHTS_ONLY_BY_DEFAULT = tuple(map(int, torch.__version__.split('.')[:2])) >= (2, 6)


class ToyDataset(Dataset):
    """16 samples of y = x0 - 2 x1 + 0.5, with mmdet/mmseg-style metainfo."""

    metainfo = dict(classes=('background', 'object'), palette=[(0, 0, 0), (255, 0, 0)],
                    label_map=None, reduce_zero_label=False)

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(16, 2, generator=generator)
        self.labels = self.inputs @ torch.tensor([[1.0], [-2.0]]) + 0.5

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return dict(inputs=self.inputs[index], labels=self.labels[index])


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels, mode='tensor'):
        outputs = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=((outputs - torch.stack(labels)) ** 2).mean())
        if mode == 'predict':
            return list(outputs)
        return outputs


class NegativeMSE(BaseMetric):
    """Returns a numpy scalar, as mmseg's IoUMetric does (``np.round``)."""

    def process(self, data_batch, data_samples):
        for prediction, label in zip(data_samples, data_batch['labels']):
            self.results.append(float((prediction - label) ** 2))

    def compute_metrics(self, results):
        return dict(score=np.round(-np.mean(results), 4))


class RecordStateBeforeTraining(Hook):
    """Snapshots the runner right after load/resume, before the first iteration."""

    def before_train(self, runner):
        self.iter = runner.iter
        self.optimizer = copy.deepcopy(runner.optim_wrapper.optimizer.state_dict())
        self.schedulers = [copy.deepcopy(s.state_dict()) for s in runner.param_schedulers]
        self.best_score = runner.message_hub.get_info('best_score')
        self.loss_history = runner.message_hub.get_scalar('train/loss').data


class InterruptAfter(Hook):
    """Ends training after ``iterations`` iterations, as a crash would: the
    runner was built for more, so its schedulers are those of the full run."""

    def __init__(self, iterations):
        self.iterations = iterations

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iterations:  # runner.iter counts from 0
            runner.train_loop.stop_training = True


def build_runner(work_dir, name, max_iters, resume=False, hooks=()):
    torch.manual_seed(0)
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(dataset=ToyDataset(), batch_size=4, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True, seed=0)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=2),
        val_dataloader=dict(dataset=ToyDataset(), batch_size=8, num_workers=0,
                            sampler=dict(type='DefaultSampler', shuffle=False)),
        val_cfg=dict(),
        val_evaluator=[NegativeMSE()],
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05, weight_decay=0.05)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
            dict(type='MultiStepLR', milestones=[2, 6], gamma=0.5, by_epoch=False),
        ],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=ITERS_BEFORE_RESUME,
                            by_epoch=False, save_best='score', rule='greater'),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks),
        randomness=dict(seed=0),
        resume=resume,
    )


@pytest.fixture(scope='module')
def work_dir(tmp_path_factory):
    """A work dir holding the checkpoint of ITERS_BEFORE_RESUME iterations."""
    work_dir = tmp_path_factory.mktemp('resume')
    interrupted = build_runner(work_dir, 'interrupted', TOTAL_ITERS,
                               hooks=[InterruptAfter(ITERS_BEFORE_RESUME)])
    interrupted.train()
    assert interrupted.iter == ITERS_BEFORE_RESUME
    return work_dir


@pytest.fixture(scope='module')
def checkpoint_path(work_dir):
    path = work_dir / f'iter_{ITERS_BEFORE_RESUME}.pth'
    assert path.is_file()
    return path


@pytest.fixture
def without_allow_list():
    """torch's allow-list emptied for one test, then restored."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.add_safe_globals(saved)


@needs_allow_list
def test_checkpoint_holds_what_needs_the_allow_list(checkpoint_path):
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert isinstance(checkpoint['message_hub']['runtime_info']['best_score'], np.floating)
    assert checkpoint['meta']['dataset_meta'] == ToyDataset.metainfo
    assert checkpoint['meta']['iter'] == ITERS_BEFORE_RESUME
    assert torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint_path) == []


@needs_allow_list
def test_plain_weights_only_load_fails_without_allow_list(checkpoint_path, without_allow_list):
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint_path))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in unsafe
    assert 'builtins.getattr' in unsafe
    assert unsafe <= {name for _, name in mmengine_checkpoint_globals()}
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global'):
        torch.load(checkpoint_path, weights_only=True)


@needs_allow_list
def test_mmdet_and_mmseg_dataset_meta_needs_no_extra_globals(without_allow_list):
    """The runner saves the train dataset's metainfo into the checkpoint."""
    from mmdet.datasets import CocoDataset
    from mmseg.datasets import ADE20KDataset
    metas = [CocoDataset(data_root='unused', ann_file='unused.json', lazy_init=True).metainfo,
             ADE20KDataset(data_root='unused', lazy_init=True).metainfo]
    buffer = io.BytesIO(_torch_saved_bytes({'meta': metas}))
    assert torch.load(buffer, weights_only=True) == {'meta': metas}


@needs_allow_list
def test_weights_only_load_equals_unrestricted_load(checkpoint_path):
    safe = torch.load(checkpoint_path, weights_only=True)
    full = torch.load(checkpoint_path, weights_only=False)
    assert safe['meta'] == full['meta']
    assert safe['param_schedulers'] == full['param_schedulers']
    assert safe['message_hub']['runtime_info'] == full['message_hub']['runtime_info']
    for key, buffer in full['message_hub']['log_scalars'].items():
        loaded = safe['message_hub']['log_scalars'][key]
        np.testing.assert_array_equal(loaded.data[0], buffer.data[0])
        assert loaded.mean() == buffer.mean() and loaded.statistics('current') == buffer.current()
    for key, tensor in full['state_dict'].items():
        torch.testing.assert_close(safe['state_dict'][key], tensor, rtol=0, atol=0)


def test_resume_continues_with_optimizer_and_scheduler_state(work_dir, checkpoint_path, tmp_path):
    saved = torch.load(checkpoint_path, weights_only=False)
    recorder = RecordStateBeforeTraining()
    resumed = build_runner(work_dir, 'resumed', TOTAL_ITERS, resume=True, hooks=[recorder])
    resumed.train()

    assert recorder.iter == ITERS_BEFORE_RESUME
    saved_adam = saved['optimizer']['state']
    assert saved_adam, 'the saved optimizer has no state to compare'
    for index, state in saved_adam.items():
        for key in ('exp_avg', 'exp_avg_sq', 'step'):
            torch.testing.assert_close(recorder.optimizer['state'][index][key], state[key],
                                       rtol=0, atol=0)
    assert recorder.optimizer['param_groups'] == saved['optimizer']['param_groups']
    assert recorder.schedulers == saved['param_schedulers']
    assert all(scheduler['last_step'] > 0 for scheduler in recorder.schedulers)
    assert recorder.best_score == saved['message_hub']['runtime_info']['best_score']
    np.testing.assert_array_equal(recorder.loss_history[0],
                                  saved['message_hub']['log_scalars']['train/loss'].data[0])
    assert resumed.iter == TOTAL_ITERS

    # Resuming lost nothing: 4 + 4 iterations end where 8 uninterrupted ones do.
    uninterrupted = build_runner(tmp_path, 'uninterrupted', TOTAL_ITERS)
    uninterrupted.train()
    for (name, resumed_param), (_, reference) in zip(resumed.model.named_parameters(),
                                                      uninterrupted.model.named_parameters()):
        torch.testing.assert_close(resumed_param, reference, rtol=0, atol=0, msg=name)


def _torch_saved_bytes(obj, legacy=False):
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@needs_allow_list
@pytest.mark.parametrize('module', ['numpy.core.multiarray', 'numpy._core.multiarray'])
def test_numpy_1_and_2_module_paths_load(module):
    """numpy 1 pickles ``numpy.core.multiarray.*``, numpy 2 ``numpy._core...``;
    checkpoints from either load whichever numpy is installed."""
    values = {'scalar': np.float64(0.25), 'count': np.int64(3), 'array': np.arange(3.0)}
    data = _torch_saved_bytes(values, legacy=True)  # a plain pickle stream to rewrite
    other = {'numpy.core.multiarray', 'numpy._core.multiarray'} - {module}
    data = data.replace(f'{other.pop()}\n'.encode(), f'{module}\n'.encode())
    assert f'{module}\n'.encode() in data

    loaded = torch.load(io.BytesIO(data), weights_only=True)
    assert loaded['scalar'] == 0.25 and loaded['scalar'].dtype == np.float64
    assert loaded['count'] == 3 and loaded['count'].dtype == np.int64
    np.testing.assert_array_equal(loaded['array'], np.arange(3.0))


@needs_allow_list
def test_importing_nat_mm_installs_the_allow_list():
    code = ('import torch, nat_mm; '
            'print(*[entry[1] for entry in torch.serialization.get_safe_globals() '
            'if isinstance(entry, tuple)])')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300, check=True, cwd=Path(__file__).resolve().parents[2])
    assert {name for _, name in mmengine_checkpoint_globals()} <= set(result.stdout.split())


@needs_allow_list
def test_allow_list_is_idempotent():
    before = set(torch.serialization.get_safe_globals())
    allow_mmengine_checkpoints()
    allow_mmengine_checkpoints()
    assert set(torch.serialization.get_safe_globals()) == before
    assert set(mmengine_checkpoint_globals()) <= before


def test_statistics_match_what_history_buffer_registers():
    HistoryBuffer()  # registers the defaults on the class
    own = {name for name, method in HistoryBuffer._statistics_methods.items()
           if getattr(HistoryBuffer, name, None) is method}
    assert own == set(HISTORY_BUFFER_STATISTICS)


class ArbitraryObject:
    pass


class CallsEval:

    def __reduce__(self):
        return eval, ('1 + 1',)


class GetsAnyAttribute:

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


class GetsOtherHistoryBufferAttribute:

    def __reduce__(self):
        return getattr, (HistoryBuffer, 'update')


@needs_allow_list
@pytest.mark.parametrize('payload, message', [
    (ArbitraryObject(), 'ArbitraryObject'),
    (CallsEval(), 'eval'),
    (GetsAnyAttribute(), 'refused getattr'),
    (GetsOtherHistoryBufferAttribute(), 'refused getattr'),
])
@pytest.mark.parametrize('explicit', [True, False], ids=['weights_only=True', 'default'])
def test_allow_list_keeps_refusing_other_globals(payload, message, explicit):
    if not explicit and not LOADS_WEIGHTS_ONLY_BY_DEFAULT:
        pytest.skip(f'torch {torch.__version__} loads unrestricted by default (weights-only '
                    'from torch 2.6 on)')
    data = io.BytesIO(_torch_saved_bytes({'meta': {}, 'payload': payload}))
    kwargs = dict(weights_only=True) if explicit else {}
    with pytest.raises(pickle.UnpicklingError, match=message):
        torch.load(data, **kwargs)
