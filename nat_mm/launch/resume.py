"""The checkpoint a resumed run loads, checked before anything unpickles it.

A damaged checkpoint (cut short by a kill while it was written, or empty) is
never unpickled: ``--resume`` without a path falls back to the latest complete
checkpoint, an explicit path stops with the file named
(:func:`resolve_resume_checkpoint`).
"""
import logging
import os
import os.path as osp
import re

from mmengine.logging import print_log

from ..models.checkpoint import checkpoint_damage

#: Checkpoints MMEngine's CheckpointHook writes.
_CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def complete_checkpoints(folder):
    """The checkpoints ``iter_N.pth`` / ``epoch_N.pth`` in ``folder`` that are
    complete (:func:`~nat_mm.models.checkpoint.checkpoint_damage`, the checkpoint
    pipeline's reader), highest N first."""
    found = []
    for name in os.listdir(folder) if osp.isdir(folder) else []:
        match = _CHECKPOINT_NAME.match(name)
        if match:
            found.append((int(match.group(1)), osp.join(folder, name)))
    return [path for _, path in sorted(found, reverse=True) if checkpoint_damage(path) is None]


def resolve_resume_checkpoint(cfg):
    """Check the checkpoint a resumed run will load, before anything unpickles it.

    ``cfg.resume`` with ``cfg.load_from`` (``--resume PATH``): the file must
    exist and be complete. ``cfg.resume`` alone (``--resume``): MMEngine
    resumes from the file named in ``work_dir/last_checkpoint``; when that
    file is missing, empty, names a missing file or a damaged one, the latest
    complete ``iter_N.pth`` / ``epoch_N.pth`` in the work dir is used instead
    (``cfg.load_from`` is set to it, with a warning naming the damaged file).

    Returns:
        The checkpoint the run will resume from, or None (no resume, or
        nothing to resume from: MMEngine starts from scratch).

    Raises:
        FileNotFoundError: an explicit checkpoint that does not exist.
        ValueError: an explicit checkpoint that is damaged, or a damaged
            latest checkpoint with no complete one to fall back to.
    """
    if not cfg.get('resume'):
        return None
    explicit = cfg.get('load_from')
    if explicit:
        if not osp.isfile(explicit):
            raise FileNotFoundError(f'--resume: checkpoint {explicit} does not exist: give an '
                                    'existing one, or --resume without a path to continue from '
                                    'the latest complete one in the work dir')
        damage = checkpoint_damage(explicit)
        if damage is None:
            return explicit
        others = [path for path in complete_checkpoints(osp.dirname(explicit) or '.')
                  if not osp.samefile(path, explicit)]
        fix = (f'Resume from the latest complete checkpoint beside it: --resume {others[0]}'
               if others else 'There is no complete checkpoint beside it: train without '
               '--resume, or resume from a copy')
        raise ValueError(f'--resume: checkpoint {explicit} is damaged: {damage}. {fix}.')

    pointer = osp.join(cfg.work_dir, 'last_checkpoint')
    latest, problem = None, None
    if osp.isfile(pointer):
        with open(pointer) as f:
            latest = f.read().strip()
        if not latest:
            problem = f'{pointer} is empty'
        elif not osp.isfile(latest):
            problem = f'{pointer} names {latest}, which does not exist'
        else:
            damage = checkpoint_damage(latest)
            if damage is None:
                return latest
            problem = f'the latest checkpoint {latest} (named by {pointer}) is damaged: {damage}'
    candidates = complete_checkpoints(cfg.work_dir)
    if candidates:
        print_log(f'--resume: {problem or f"there is no {pointer}"}; resuming from the latest '
                  f'complete checkpoint {candidates[0]} instead.', logger='current',
                  level=logging.WARNING)
        cfg.load_from = candidates[0]
        return candidates[0]
    if problem is None:
        return None
    raise ValueError(f'--resume: {problem}, and {cfg.work_dir} holds no complete checkpoint '
                     'to resume from instead. Train without --resume (or delete the damaged '
                     'file and the pointer first).')
