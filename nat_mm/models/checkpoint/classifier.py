"""Stage 4 of the checkpoint pipeline for whole NAT / DiNAT ImageNet classifiers, head included.

The official classifier is the backbone, a final LayerNorm ``norm`` over the last stage,
average pooling over positions and a linear ``head``. MMPretrain builds the same model as

    ImageClassifier(backbone=NAT(out_indices=(3,)), neck=GlobalAveragePooling,
                    head=LinearClsHead)

where the backbone's output norm of the last stage, ``backbone.norm3``, is the final norm
and ``head.fc`` the linear head. :func:`classifier_state_dict` walks the pipeline once
(:func:`~.read.read_checkpoint` -> :func:`~.names.to_nat_names`, which splits off the
final norm and head of official files, Hub folders and MMEngine checkpoints of such a
classifier -> :func:`~.checks.check_classifier`) and :func:`load_classifier` loads the
result. A detection or segmentation checkpoint (no head) and a head of another number of
classes are refused with a :class:`~.messages.CheckpointError` that says what to do.

:class:`ClassifierPretrainedInit` makes the model-level
``init_cfg=dict(type='Pretrained', checkpoint=...)`` of such a classifier use it
(registered by :mod:`nat_mm.registry`). This module imports the backbone class, so the
package's ``__init__`` (imported by the backbone) does not import it.
"""
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from torch import nn

from ..backbones import NAT
from .checks import check_classifier
from .messages import CheckpointError, summarize_keys
from .names import (BACKBONE_PREFIX, MMPRETRAIN_HEAD_PREFIX, OFFICIAL_HEAD_PREFIX,
                    OFFICIAL_NORM_PREFIX, to_nat_names)
from .read import read_checkpoint


def is_nat_classifier(model):
    """Whether ``model`` is a classifier with a NAT backbone and a linear head (``head.fc``),
    as MMPretrain's ``ImageClassifier`` + ``LinearClsHead`` builds it."""
    head = getattr(model, 'head', None)
    return (isinstance(getattr(model, 'backbone', None), NAT)
            and isinstance(getattr(head, 'fc', None), nn.Linear))


def official_classifier_parts(checkpoint, map_location='cpu'):
    """The final norm and head of a classification checkpoint, in the official names.

    Args:
        checkpoint: a path as for :func:`classifier_state_dict`.

    Returns:
        dict with ``norm.{weight,bias}`` and ``head.{weight,bias}`` (empty for a
        checkpoint without them; an MMPretrain-layout final norm is not looked for).
    """
    names = to_nat_names(read_checkpoint(checkpoint, map_location=map_location).checkpoint)
    return {**{OFFICIAL_NORM_PREFIX + name: value for name, value in names.final_norm.items()},
            **{OFFICIAL_HEAD_PREFIX + name: value for name, value in names.head.items()}}


def classifier_state_dict(checkpoint, model, map_location='cpu', head=True):
    """The state dict of ``model`` (a NAT classifier) from a classification checkpoint.

    Args:
        checkpoint: path of an official ``.pth``, a Hub folder (or its weights file),
            an MMEngine checkpoint of the classifier, or a URL.
        model: see :func:`is_nat_classifier`; its backbone must output the last stage
            only (``out_indices=(3,)`` for four stages): that output's norm is the final norm.
        map_location: passed to the loader.
        head: False leaves the head out (fine-tuning for other classes: the backbone and
            its final norm load, whatever the checkpoint's number of classes).

    Returns:
        (state_dict, file): keys as in ``model.state_dict()`` (``backbone.*``,
        ``head.fc.*``), and the :data:`~.read.CheckpointFile` read.

    Raises:
        CheckpointError: naming the file, what is wrong and what to do.
    """
    backbone_model = model.backbone
    last = len(backbone_model.levels) - 1
    if backbone_model.out_indices != (last,):
        raise CheckpointError(
            f'a classifier needs a backbone that outputs the last stage only, whose output '
            f'norm is the final norm: set model.backbone.out_indices=({last},) (it is '
            f'{backbone_model.out_indices})')
    file = read_checkpoint(checkpoint, map_location=map_location)
    names = to_nat_names(file.checkpoint)
    checked = check_classifier(names, model, f'checkpoint {file.path!r}', config=file.config,
                               head=head, checkpoint=checkpoint)
    state_dict = {f'{BACKBONE_PREFIX}{key}': value for key, value in checked.state_dict.items()}
    if head:
        state_dict.update({f'{MMPRETRAIN_HEAD_PREFIX}{name}': value
                           for name, value in names.head.items()})
    return state_dict, file


def load_classifier(model, checkpoint, map_location='cpu', head=True):
    """Load a whole classification checkpoint into ``model`` (see :func:`classifier_state_dict`).

    Every parameter of the backbone, its final norm and (with ``head``) the head is loaded,
    or nothing: the model is left unchanged when the checkpoint does not fit.

    Returns:
        (state_dict, file): what was loaded, in the model's names, and the
        :data:`~.read.CheckpointFile` read (its ``checkpoint`` holds what the file held,
        e.g. an MMEngine checkpoint's ``meta``).
    """
    state_dict, file = classifier_state_dict(checkpoint, model, map_location=map_location,
                                             head=head)
    parts = (BACKBONE_PREFIX, MMPRETRAIN_HEAD_PREFIX) if head else (BACKBONE_PREFIX,)
    expected = {key for key in model.state_dict() if key.startswith(parts)}
    missing = sorted(expected - set(state_dict))
    if missing:
        raise CheckpointError(
            f'checkpoint {file.path!r} lacks {len(missing)} tensors of the classifier '
            f'({summarize_keys(missing)}). Use the checkpoint of the model\'s variant.')
    model.load_state_dict(state_dict, strict=False)
    loaded = (f'backbone, final norm and {model.head.fc.out_features}-class head' if head
              else 'backbone and final norm; the head keeps its initial values')
    print_log(f'NAT classifier: loaded {len(state_dict)} tensors ({loaded}) from {checkpoint}',
              logger='current')
    return state_dict, file


class ClassifierPretrainedInit(PretrainedInit):
    """MMEngine's ``Pretrained`` initializer, which also loads whole NAT classifiers.

    For a model with a NAT backbone and a linear head (:func:`is_nat_classifier`) and no
    ``prefix``, the checkpoint is loaded with :func:`load_classifier` (official files, Hub
    folders, MMEngine checkpoints; errors that say what to do). Every other module is
    initialised by MMEngine's ``PretrainedInit`` unchanged.

    Args:
        checkpoint, prefix, map_location: as MMEngine's ``PretrainedInit``.
        head: False loads a NAT classifier's backbone and final norm but not its head
            (fine-tuning for another set of classes, e.g. from the ImageNet-22k weights).
    """

    def __init__(self, checkpoint, prefix=None, map_location='cpu', head=True):
        super().__init__(checkpoint, prefix=prefix, map_location=map_location)
        self.head = head

    def __call__(self, module):
        if self.prefix is not None or not is_nat_classifier(module):
            if not self.head:
                raise ValueError(
                    "init_cfg=dict(type='Pretrained', head=False) applies to a classifier with a "
                    f'NAT backbone and a linear head (head.fc); {type(module).__name__} is not '
                    'one, or a prefix is set. Remove head=False.')
            return super().__call__(module)
        load_classifier(module, self.checkpoint, map_location=self.map_location or 'cpu',
                        head=self.head)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())
        return None
