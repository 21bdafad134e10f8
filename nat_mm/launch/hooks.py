"""Training hooks that every nat_mm config turns on (``configs/_base_/nat_runtime.py``).

- :class:`FiniteLossHook`: stops training at the first iteration whose loss
  is NaN or infinite, naming the iteration and the loss terms that are not
  finite, before the checkpoint hook can save that step's weights.
- :class:`RNGStateHook`: keeps torch's random-number state in every
  checkpoint and restores it when a run resumes. MMEngine restores the
  weights, the optimizer, the schedules and the data order (an iteration-based
  loop replays the data pipeline of the iterations already trained, which
  also brings the augmentations' numpy / ``random`` state back), but not
  torch's generator, from which drop path and dropout draw their masks.
  With this hook a resumed iteration-based run on the CPU continues bitwise
  as the uninterrupted run would have (tests/test_tools/test_crash_resume.py).

Importing this module registers both in MMEngine's root ``HOOKS`` registry,
where the mmdet and mmseg runners find them; the configs import it with
``custom_imports``. (It imports ``mmengine.hooks``, which imports OpenCV, so
``import nat_mm`` does not import it.)
"""
import math

import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

#: Key of the random-number state in a checkpoint.
RNG_STATE_KEY = 'nat_mm_rng_state'


def _loss_value(value):
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else value


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise ``FloatingPointError`` when the training loss is NaN or infinite.

    Runs after every training iteration, before the logger and the checkpoint
    hooks (priority ``VERY_HIGH``), so the last checkpoint on disk holds
    finite weights. The runner already reads the loss back every iteration
    (to log it), so the check adds no device synchronisation.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not outputs or 'loss' not in outputs:
            return
        loss = _loss_value(outputs['loss'])
        if math.isfinite(loss):
            return
        terms = {key: _loss_value(value) for key, value in outputs.items()
                 if key != 'loss' and 'loss' in key}
        bad = ', '.join(f'{key}={value}' for key, value in terms.items()
                        if not math.isfinite(value)) or 'none (their sum overflowed)'
        where = f'iteration {runner.iter + 1}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1}, iteration {batch_idx + 1} of the epoch)'
        raise FloatingPointError(
            f'The training loss is {loss} at {where}' +
            (f' (non-finite terms: {bad})' if terms else '') + '. Training stopped before this '
            f"step's weights were saved: the latest checkpoint in {runner.work_dir} holds "
            'finite weights. Lower the learning rate (optim_wrapper.optimizer.lr) or clip '
            'gradients (optim_wrapper.clip_grad=dict(max_norm=...)), check the data of this '
            'iteration, then resume the run from that checkpoint (resume=True, --resume).')


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save torch's random-number state in checkpoints; restore it on resume.

    The state is saved with every checkpoint and, when a run resumes from it,
    restored before the first training epoch (after the weights, before
    the dataloader's first batch). Validation inside training runs with its
    own copy of the state, so whether it ran between a checkpoint and the
    next iteration does not change the training's random numbers.

    Only single-process runs restore the state: a checkpoint holds rank 0's
    generator only. Epoch-based runs get torch's state back too, but their data
    workers start afresh, so their augmentations are not the uninterrupted run's.
    """

    priority = 'NORMAL'

    def __init__(self):
        self._pending = None      # state loaded from a checkpoint, restored before training
        self._outside_val = None  # state to return to after a validation

    @staticmethod
    def _state():
        return dict(cpu=torch.get_rng_state(),
                    cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])

    @staticmethod
    def _restore(state):
        torch.set_rng_state(state['cpu'])
        if state['cuda'] and torch.cuda.is_available() and \
                len(state['cuda']) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state['cuda'])

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint[RNG_STATE_KEY] = self._state()

    def after_load_checkpoint(self, runner, checkpoint):
        if RNG_STATE_KEY in checkpoint and get_world_size() == 1:
            self._pending = (checkpoint.get('meta', {}).get('iter'), checkpoint[RNG_STATE_KEY])

    def before_train_epoch(self, runner):
        # Loading weights only (load_from without resume) loads a checkpoint too, but
        # leaves the run at iteration 0; a resume continues at the checkpoint's iteration.
        if self._pending is not None:
            saved_iter, state = self._pending
            self._pending = None
            if saved_iter and runner.iter == saved_iter:
                self._restore(state)

    def before_val(self, runner):
        self._outside_val = self._state()

    def after_val(self, runner):
        if self._outside_val is not None:
            self._restore(self._outside_val)
            self._outside_val = None
