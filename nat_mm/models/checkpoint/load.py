"""Stage 4 of the checkpoint pipeline for the NAT backbone: load what stages 1-3 give.

:func:`load_pretrained` (used by ``NAT.init_weights`` for
``init_cfg=dict(type='Pretrained', checkpoint=...)``) walks the pipeline once:
:func:`~.read.read_checkpoint` -> :func:`~.names.to_nat_names` ->
:func:`~.checks.check_backbone` -> ``model.load_state_dict``.
:func:`prepare_state_dict` stops before the last step (the converter and the
download tool write its result). Both refuse partial loads; every problem is a
:class:`~.messages.CheckpointError` naming the file, what is wrong and what to do.

:func:`convert_checkpoint` and :func:`checkpoint_filter_fn` (timm's name) convert a
checkpoint already in memory: stage 2 and the model fitting of stage 3, without the checks.
"""
from mmengine.logging import print_log

from .checks import check_backbone, fit_to_model
from .messages import summarize_keys
from .names import to_nat_names
from .read import read_checkpoint


def prepare_state_dict(checkpoint, model, prefix=None, map_location='cpu', strict=True):
    """Read, rename and check a checkpoint for ``model`` without loading it.

    Args:
        checkpoint: path of a checkpoint file or Hub snapshot folder, or a URL
            (see :func:`~.read.read_checkpoint`).
        model: the NAT backbone.
        prefix: keep only the keys under this prefix (e.g. 'backbone.').
        map_location: passed to the loader.
        strict: refuse checkpoints whose layers do not match the model
            one-to-one (the output norms ``norm{i}`` may be missing), and a
            Transformers ``config.json`` that disagrees with the model.

    Returns:
        :data:`~.checks.Checked` (state_dict, dropped, missing, unexpected): the
        backbone state dict in nat_mm's names (name -> tensor) and the key lists.

    Raises:
        CheckpointError: naming the file, what is wrong and what to do.
    """
    file = read_checkpoint(checkpoint, map_location=map_location)
    names = to_nat_names(file.checkpoint, prefix=prefix)
    return check_backbone(names, model, f'checkpoint {file.path!r}', config=file.config,
                          strict=strict)


def load_pretrained(model, checkpoint, prefix=None, map_location='cpu', strict=True):
    """Load an official, MMEngine or Hub (Transformers-layout) checkpoint into ``model``.

    Args:
        model: the NAT backbone.
        checkpoint: path of a checkpoint file or Hub snapshot folder, or a URL.
        prefix, map_location, strict: see :func:`prepare_state_dict`.

    Returns:
        (loaded, missing, unexpected): key lists. A summary is logged.

    Raises:
        CheckpointError: naming the file, what is wrong and what to do (the
            model is left unchanged).
    """
    state_dict, dropped, missing, unexpected = prepare_state_dict(
        checkpoint, model, prefix=prefix, map_location=map_location, strict=strict)
    loadable = {key: value for key, value in state_dict.items() if key not in unexpected}
    model.load_state_dict(loadable, strict=False)
    print_log(
        f'NAT: loaded {len(loadable)} tensors from {checkpoint}; ignored {len(dropped)} '
        f'non-backbone tensors ({summarize_keys(dropped)}); kept initial values of '
        f'{len(missing)} tensors missing from the checkpoint ({summarize_keys(missing)}); '
        f'unexpected: {summarize_keys(unexpected)}.', logger='current')
    return list(loadable), missing, unexpected


def convert_checkpoint(checkpoint, model, prefix=None):
    """Backbone state dict from a checkpoint in memory (official, MMEngine or Transformers).

    Args:
        checkpoint: loaded checkpoint (see :func:`~.names.unwrap_state_dict`).
        model: the NAT backbone; only its state-dict keys and shapes are read, to
            resize rpb tables and to leave out output norms it does not have.
        prefix: if given, keep only keys starting with it, and strip it.

    Returns:
        (state_dict, dropped): the backbone state dict in nat_mm's names and the
        keys left out (classification head / final norm, non-backbone modules,
        output norms ``norm{i}`` of levels the model does not output).
    """
    names = to_nat_names(checkpoint, prefix=prefix)
    state_dict, absent = fit_to_model(names.backbone, model)
    return state_dict, names.foreign + names.classifier_keys + absent


def checkpoint_filter_fn(checkpoint, model):
    """Backbone state dict for ``model`` from an official NAT checkpoint (timm-style name)."""
    return convert_checkpoint(checkpoint, model)[0]
