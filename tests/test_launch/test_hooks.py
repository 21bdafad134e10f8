"""nat_mm's training hooks in MMEngine's own Runner, with a small model that
needs neither mmdet nor mmseg: a non-finite loss stops the run naming the
iteration; a resumed run draws the random numbers an uninterrupted one would."""
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from nat_mm.launch import hooks  # registers the hooks


class DropoutRegressor(BaseModel):
    """Linear regression through dropout: its loss depends on torch's generator."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.dropout = nn.Dropout(0.5)

    def forward(self, inputs, targets, mode='loss'):
        prediction = self.linear(self.dropout(inputs))       # batches of default_collate
        return dict(loss=(prediction.squeeze(1) - targets).square().mean())


def _dataset(count, bad_at=None):
    gen = torch.Generator().manual_seed(0)
    samples = [dict(inputs=torch.randn(4, generator=gen), targets=torch.randn((), generator=gen))
               for _ in range(count)]
    if bad_at is not None:
        samples[bad_at]['inputs'] = torch.full((4,), float('nan'))
    return samples


def _runner(work_dir, max_iters, custom_hooks, samples, resume=False):
    return Runner(
        model=DropoutRegressor(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=samples, batch_size=1, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom_hooks, randomness=dict(seed=0), resume=resume,
        default_scope='mmengine', env_cfg=dict(dist_cfg=dict(backend='gloo')))


def test_a_non_finite_loss_stops_the_run_naming_the_iteration(tmp_path):
    runner = _runner(tmp_path, 6, [dict(type='FiniteLossHook')], _dataset(6, bad_at=4))
    with pytest.raises(FloatingPointError) as error:
        runner.train()
    message = str(error.value)
    assert message.startswith('The training loss is nan at iteration 5. Training stopped')
    assert str(tmp_path) in message and '--resume' in message
    assert (tmp_path / 'iter_4.pth').is_file()
    assert not (tmp_path / 'iter_6.pth').exists()


def test_without_the_hook_the_run_trains_on(tmp_path):
    """What the hook prevents: MMEngine alone finishes the run with non-finite weights."""
    runner = _runner(tmp_path, 6, [], _dataset(6, bad_at=4))
    runner.train()
    assert not torch.isfinite(runner.model.linear.weight).all()


def _final_weights(work_dir, custom_hooks, interrupt_at=None):
    """Weights after 6 iterations, trained at once or stopped at ``interrupt_at`` and resumed."""
    samples = _dataset(6)
    if interrupt_at is None:
        runner = _runner(work_dir, 6, custom_hooks, samples)
        runner.train()
        return runner.model.state_dict()
    _runner(work_dir, interrupt_at, custom_hooks, samples).train()
    resumed = _runner(work_dir, 6, custom_hooks, samples, resume=True)
    resumed.train()
    assert resumed.iter == 6
    return resumed.model.state_dict()


@pytest.mark.parametrize('with_hook', [True, False])
def test_a_resumed_run_draws_the_same_dropout_masks(tmp_path, with_hook):
    custom = [dict(type='RNGStateHook')] if with_hook else []
    straight = _final_weights(tmp_path / 'straight', custom)
    resumed = _final_weights(tmp_path / 'resumed', custom, interrupt_at=2)
    assert (hooks.RNG_STATE_KEY in torch.load(tmp_path / 'resumed' / 'iter_2.pth',
                                        weights_only=False)) == with_hook
    same = all(torch.equal(straight[key], resumed[key]) for key in straight)
    assert same == with_hook
