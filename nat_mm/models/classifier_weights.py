"""Loading whole NAT / DiNAT ImageNet classifiers, head included, into an MMPretrain classifier.

The official classifier is the backbone, a final LayerNorm ``norm`` over the last stage,
average pooling over positions and a linear ``head``. MMPretrain builds the same model as

    ImageClassifier(backbone=NAT(out_indices=(3,)), neck=GlobalAveragePooling,
                    head=LinearClsHead)

where the backbone's output norm of the last stage, ``backbone.norm3``, is the final norm
and ``head.fc`` the linear head. :func:`classifier_state_dict` maps a checkpoint in any of
these layouts onto that model:

- official ``.pth`` files: the backbone's keys, ``norm.*``, ``head.*``;
- Hugging Face Hub folders (Transformers' ``Nat/DinatForImageClassification``):
  ``nat.``/``dinat.``-prefixed backbone, ``layernorm.*``, ``classifier.*``
  (:mod:`nat_mm.models.transformers_layout`);
- checkpoints MMEngine saved from such a classifier: ``backbone.*``, ``head.fc.*``.

The backbone part goes through the backbone loader's conversion and checks
(:mod:`nat_mm.models.weight_conversion`: wrappers, prefixes, rpb resizing, width and
variant checks, ``config.json``). The head must be there and fit: a detection or
segmentation checkpoint (no head) and a head of another number of classes are refused
with a :class:`~nat_mm.models.checkpoint_files.CheckpointError` that says what to do.

:func:`load_classifier` loads the result; :class:`ClassifierPretrainedInit` makes the
model-level ``init_cfg=dict(type='Pretrained', checkpoint=...)`` of such a classifier use
it (registered by :mod:`nat_mm.registry`).
"""
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from torch import nn

from .backbones import NAT
from .checkpoint_files import CheckpointError, read_checkpoint
from .transformers_layout import (CLASSIFIER_HEAD_PREFIX, CLASSIFIER_NORM_PREFIX, check_config,
                                  is_transformers_layout, strip_model_prefix)
from .weight_conversion import (BACKBONE_PREFIX, check_state_dict, convert_checkpoint,
                                strip_wrapper_prefixes, summarize_keys, unwrap_state_dict)

#: Official classifier keys: the final norm and the head.
OFFICIAL_NORM_PREFIX = 'norm.'
OFFICIAL_HEAD_PREFIX = 'head.'
#: Where MMPretrain's LinearClsHead keeps its linear layer.
MMPRETRAIN_HEAD_PREFIX = 'head.fc.'


def is_nat_classifier(model):
    """Whether ``model`` is a classifier with a NAT backbone and a linear head (``head.fc``),
    as MMPretrain's ``ImageClassifier`` + ``LinearClsHead`` builds it."""
    head = getattr(model, 'head', None)
    return (isinstance(getattr(model, 'backbone', None), NAT)
            and isinstance(getattr(head, 'fc', None), nn.Linear))


def _take(state_dict, prefix):
    """Remove the keys under ``prefix`` from ``state_dict``; return them without it."""
    return {key[len(prefix):]: state_dict.pop(key) for key in list(state_dict)
            if key.startswith(prefix)}


def split_classifier(state_dict):
    """Split a classifier state dict into backbone, final norm and head.

    Args:
        state_dict: name -> tensor in the official, Transformers or MMPretrain layout
            (``module.`` prefixes allowed).

    Returns:
        (backbone, final_norm, head, layout): ``backbone`` still in its own layout
        (for :func:`~nat_mm.models.weight_conversion.convert_checkpoint`), ``final_norm``
        and ``head`` as {'weight', 'bias'} dicts (empty when absent; an MMPretrain-layout
        final norm stays in ``backbone`` as its ``norm{i}``), ``layout`` one of
        'official', 'transformers', 'mmpretrain'.
    """
    state_dict = {strip_wrapper_prefixes(key): value for key, value in state_dict.items()}
    if is_transformers_layout(state_dict):
        stripped = {strip_model_prefix(key): value for key, value in state_dict.items()}
        final_norm = _take(stripped, CLASSIFIER_NORM_PREFIX)
        head = _take(stripped, CLASSIFIER_HEAD_PREFIX)
        return stripped, final_norm, head, 'transformers'
    if any(key.startswith(BACKBONE_PREFIX) for key in state_dict):
        head = _take(state_dict, MMPRETRAIN_HEAD_PREFIX)
        return state_dict, {}, head, 'mmpretrain'
    final_norm = _take(state_dict, OFFICIAL_NORM_PREFIX)
    head = _take(state_dict, OFFICIAL_HEAD_PREFIX)
    return state_dict, final_norm, head, 'official'


def official_classifier_parts(checkpoint, map_location='cpu'):
    """The final norm and head of a classification checkpoint, in the official names.

    Args:
        checkpoint: a path as for :func:`classifier_state_dict`.

    Returns:
        dict with ``norm.{weight,bias}`` and ``head.{weight,bias}`` (empty for a
        checkpoint without them; an MMPretrain-layout final norm is not looked for).
    """
    file = read_checkpoint(checkpoint, map_location=map_location)
    _, final_norm, head, _ = split_classifier(unwrap_state_dict(file.checkpoint))
    return {**{OFFICIAL_NORM_PREFIX + name: value for name, value in final_norm.items()},
            **{OFFICIAL_HEAD_PREFIX + name: value for name, value in head.items()}}


def _head_missing(source, layout, checkpoint):
    prefix = ", prefix='backbone.'" if layout == 'mmpretrain' else ''
    return CheckpointError(
        f'{source} has no classification head (no head.* / classifier.* weights): it is a '
        'backbone, detection or segmentation checkpoint, and a classifier needs the head. '
        'Load only its backbone through the backbone\'s init_cfg and train the head: '
        f"model=dict(init_cfg=None, backbone=dict(init_cfg=dict(type='Pretrained', "
        f"checkpoint={checkpoint!r}{prefix}))), and no load_from (or use a classification "
        'checkpoint: python tools/misc/download_checkpoints.py --list)')


def _check_head(head, model, source, checkpoint):
    """Raise unless ``head`` ({'weight', 'bias'}) fits ``model.head.fc``."""
    fc = model.head.fc
    weight = head.get('weight')
    if weight is None or weight.dim() != 2 or (fc.bias is not None and 'bias' not in head):
        raise CheckpointError(
            f'{source}: its classification head is incomplete ({sorted(head)}); expected a '
            'weight (classes, channels) and a bias. Use an intact classification checkpoint.')
    classes, channels = weight.shape
    if classes != fc.out_features:
        raise CheckpointError(
            f'{source} has a {classes}-class head (weight {tuple(weight.shape)}), the model\'s '
            f'head has {fc.out_features} classes. Set model.head.num_classes={classes} (and '
            f'data_preprocessor.num_classes={classes}) to use this head, or keep '
            f'{fc.out_features} classes and fine-tune a new head on the other weights: '
            f"model.init_cfg=dict(type='Pretrained', checkpoint={checkpoint!r}, head=False) "
            '(and no load_from).')
    if channels != fc.in_features:
        raise CheckpointError(
            f'{source}: its head takes {channels} channels, the model\'s head.in_channels is '
            f'{fc.in_features}. Set model.head.in_channels={channels} (8 x the embed_dim of '
            'the checkpoint\'s variant), or use the checkpoint of the model\'s variant.')


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
        ``head.fc.*``), and the :class:`~nat_mm.models.checkpoint_files.CheckpointFile` read.

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
    source = f'checkpoint {file.path!r}'
    backbone, final_norm, head_weights, layout = split_classifier(
        unwrap_state_dict(file.checkpoint))
    if head and not head_weights:
        raise _head_missing(source, layout, str(checkpoint))
    if head:
        _check_head(head_weights, model, source, str(checkpoint))
    converted, dropped = convert_checkpoint(
        backbone, backbone_model, prefix=BACKBONE_PREFIX if layout == 'mmpretrain' else None)
    converted.update({f'norm{last}.{name}': value for name, value in final_norm.items()})
    if dropped:
        raise CheckpointError(
            f'{source} holds tensors that are neither the backbone nor the classification '
            f'head ({summarize_keys(dropped)}): it is not a checkpoint of a NAT classifier. '
            'Use a classification checkpoint (python tools/misc/download_checkpoints.py --list)')
    if file.config is not None:
        for note in check_config(file.config, backbone_model, source):
            print_log(note, logger='current')
    check_state_dict(converted, backbone_model, source,
                     transformers_layout=layout == 'transformers')
    if f'norm{last}.weight' not in converted:
        raise CheckpointError(
            f'{source} has no final norm (norm.* / layernorm.* / backbone.norm{last}.*): the '
            'file is incomplete. Use an intact classification checkpoint.')
    state_dict = {f'{BACKBONE_PREFIX}{key}': value for key, value in converted.items()}
    if head:
        state_dict.update({f'{MMPRETRAIN_HEAD_PREFIX}{name}': value
                           for name, value in head_weights.items()})
    return state_dict, file


def load_classifier(model, checkpoint, map_location='cpu', head=True):
    """Load a whole classification checkpoint into ``model`` (see :func:`classifier_state_dict`).

    Every parameter of the backbone, its final norm and (with ``head``) the head is loaded,
    or nothing: the model is left unchanged when the checkpoint does not fit.

    Returns:
        (state_dict, file): what was loaded, in the model's names, and the
        :class:`~nat_mm.models.checkpoint_files.CheckpointFile` read (its ``checkpoint``
        holds what the file held, e.g. an MMEngine checkpoint's ``meta``).
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
