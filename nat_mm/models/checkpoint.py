"""Loading official NAT checkpoints into the :class:`~nat_mm.models.NAT` backbone.

The published classification checkpoints (``nat_{mini,tiny,small,base}.pth``)
are raw state dicts of the classifier: the backbone's keys plus the final
``norm`` and ``head``. :func:`checkpoint_filter_fn` turns any of these forms
into a backbone state dict:

- a raw state dict, or one wrapped as ``{'model': ...}`` / ``{'state_dict': ...}``;
- keys prefixed by ``module.`` (DataParallel) or ``backbone.`` (a whole
  detector/segmentor; only its backbone tensors are kept);
- classification-only ``head.*`` and ``norm.*`` are dropped;
- relative position bias tables are resized bicubically when the model's
  kernel size differs.

:func:`load_pretrained` (used by ``NAT.init_weights`` for
``init_cfg=dict(type='Pretrained', checkpoint=...)``) validates the result
against the model and refuses partial loads.
"""
import os.path as osp
import re

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

#: Keys of the classifier that the backbone does not have.
CLASSIFICATION_ONLY_PREFIXES = ('head.', 'norm.')
#: Prefixes added by wrappers, stripped from every key.
WRAPPER_PREFIXES = ('module.',)
#: Prefix of the backbone inside a detector/segmentor checkpoint.
BACKBONE_PREFIX = 'backbone.'
#: Output norms of the dense-prediction backbone: absent from classification checkpoints.
OUTPUT_NORM_KEY = re.compile(r'^norm\d+\.')

HOW_TO_GET_CHECKPOINTS = (
    'Download the published ImageNet-1k classification checkpoints nat_mini.pth, nat_tiny.pth, '
    'nat_small.pth or nat_base.pth from the official Neighborhood Attention Transformer project '
    '(SHI-Labs/Neighborhood-Attention-Transformer, classification checkpoints) and put them under '
    'checkpoints/, or train from scratch with --cfg-options model.backbone.init_cfg=None')


def unwrap_state_dict(checkpoint):
    """The state dict inside a loaded checkpoint.

    Args:
        checkpoint: a state dict (name -> tensor) or a dict holding one under
            'state_dict' or 'model'.

    Returns:
        dict name -> tensor.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f'checkpoint must be a dict, got {type(checkpoint).__name__}')
    for wrapper_key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(wrapper_key), dict):
            checkpoint = checkpoint[wrapper_key]
            break
    non_tensors = [key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if non_tensors:
        raise TypeError(
            'checkpoint is neither a state dict nor a dict with a "state_dict" or "model" entry: '
            f'entries {non_tensors[:5]} are not tensors')
    return dict(checkpoint)


def strip_prefixes(state_dict):
    """Remove ``module.`` prefixes; keep only the ``backbone.`` part of a full model.

    Returns:
        (state_dict, dropped): the renamed dict and the keys that were not
        under ``backbone.`` when some were.
    """
    renamed = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split('.', 1)[1]
        renamed[key] = value
    if not any(key.startswith(BACKBONE_PREFIX) for key in renamed):
        return renamed, []
    backbone = {key[len(BACKBONE_PREFIX):]: value for key, value in renamed.items()
                if key.startswith(BACKBONE_PREFIX)}
    dropped = [key for key in renamed if not key.startswith(BACKBONE_PREFIX)]
    return backbone, dropped


def resize_rpb(rpb, kernel_size):
    """Resize a relative position bias table to another kernel size.

    Args:
        rpb: (heads, 2K-1, 2K-1).
        kernel_size: the new K'.

    Returns:
        (heads, 2K'-1, 2K'-1), bicubic (align_corners=False); the zero-offset
        centre value is preserved.
    """
    size = 2 * kernel_size - 1
    resized = F.interpolate(rpb[None].float(), size=(size, size), mode='bicubic',
                            align_corners=False)
    return resized[0].to(rpb.dtype)


def convert_checkpoint(checkpoint, model, prefix=None):
    """Backbone state dict from an official or converted checkpoint.

    Args:
        checkpoint: loaded checkpoint (see :func:`unwrap_state_dict`).
        model: the NAT backbone; only its state-dict shapes are read, to
            resize rpb tables.
        prefix: if given, keep only keys starting with it, and strip it.

    Returns:
        (state_dict, dropped): the backbone state dict and the keys left out
        (classification head/norm, non-backbone modules).
    """
    state_dict = unwrap_state_dict(checkpoint)
    dropped = []
    if prefix:
        dropped = [key for key in state_dict if not key.startswith(prefix)]
        state_dict = {key[len(prefix):]: value for key, value in state_dict.items()
                      if key.startswith(prefix)}
    state_dict, not_backbone = strip_prefixes(state_dict)
    dropped += not_backbone
    dropped += [key for key in state_dict if key.startswith(CLASSIFICATION_ONLY_PREFIXES)]
    state_dict = {key: value for key, value in state_dict.items()
                  if not key.startswith(CLASSIFICATION_ONLY_PREFIXES)}
    model_state = model.state_dict()
    for key, value in state_dict.items():
        target = model_state.get(key)
        if (key.endswith('attn.rpb') and target is not None and value.dim() == 3
                and target.shape[0] == value.shape[0] and target.shape != value.shape):
            state_dict[key] = resize_rpb(value, (target.shape[-1] + 1) // 2)
    return state_dict, dropped


def checkpoint_filter_fn(checkpoint, model):
    """Backbone state dict for ``model`` from an official NAT checkpoint (timm-style name)."""
    return convert_checkpoint(checkpoint, model)[0]


def summarize_keys(keys, limit=6):
    """Compact description of state-dict keys, grouped by module.

    ``['norm0.weight', 'norm0.bias', 'norm1.weight']`` -> ``'norm0.{weight,bias}, norm1.weight'``.
    """
    if not keys:
        return 'none'
    groups = {}
    for key in keys:
        module, _, name = key.rpartition('.')
        groups.setdefault(module, []).append(name)
    parts = [f'{module}.{names[0]}' if len(names) == 1 else f'{module}.{{{",".join(names)}}}'
             for module, names in groups.items()]
    if len(parts) > limit:
        parts = parts[:limit] + [f'... ({len(parts) - limit} more modules)']
    return ', '.join(parts)


def check_state_dict(state_dict, model, source, strict=True):
    """Compare a converted state dict with ``model``; raise on anything that would load partially.

    Shape mismatches always raise. With ``strict``, keys the model has but
    the checkpoint lacks (other than the output norms ``norm{i}``) and keys
    the model does not have also raise.

    Returns:
        (missing, unexpected) key lists.
    """
    model_state = model.state_dict()
    mismatched = [(key, tuple(value.shape), tuple(model_state[key].shape))
                  for key, value in state_dict.items()
                  if key in model_state and value.shape != model_state[key].shape]
    arch_hint = (f'Is it a checkpoint of another NAT variant? The model is '
                 f'{type(model).__name__} with {_describe_arch(model)}.')
    if mismatched:
        details = '; '.join(f'{key}: checkpoint {ckpt} vs model {ours}'
                            for key, ckpt, ours in mismatched[:5])
        raise ValueError(
            f'{source}: {len(mismatched)} tensors have shapes that do not fit the model, first '
            f'{details}. {arch_hint}')
    missing = [key for key in model_state if key not in state_dict]
    unexpected = [key for key in state_dict if key not in model_state]
    missing_layers = [key for key in missing if not OUTPUT_NORM_KEY.match(key)]
    if strict and (missing_layers or unexpected):
        raise ValueError(
            f'{source} does not match the model: it lacks {len(missing_layers)} tensors '
            f'({summarize_keys(missing_layers)}) and has {len(unexpected)} unknown tensors '
            f'({summarize_keys(unexpected)}). {arch_hint} (Pass strict=False in the Pretrained '
            'init_cfg to load the matching part anyway.)')
    return missing, unexpected


def _describe_arch(model):
    settings = getattr(model, 'arch_settings', None)
    if not settings:
        return 'unknown settings'
    return (f"embed_dim={settings['embed_dim']}, depths={list(settings['depths'])}, "
            f"num_heads={list(settings['num_heads'])}, layer_scale={settings['layer_scale']}")


def load_checkpoint_file(filename, map_location='cpu'):
    """Load a checkpoint with MMEngine; a missing local file gets an explanatory error."""
    is_local = '://' not in filename
    if is_local and not osp.isfile(osp.expanduser(filename)):
        raise FileNotFoundError(
            f'NAT pretrained checkpoint {filename!r} not found. {HOW_TO_GET_CHECKPOINTS}.')
    return CheckpointLoader.load_checkpoint(filename, map_location=map_location)


def load_pretrained(model, checkpoint, prefix=None, map_location='cpu', strict=True):
    """Load an official or converted NAT checkpoint into ``model`` and log a summary.

    Args:
        model: the NAT backbone.
        checkpoint: path or URL of the checkpoint file.
        prefix: keep only the keys under this prefix (e.g. 'backbone.').
        map_location: passed to the loader.
        strict: refuse checkpoints whose layers do not match the model
            one-to-one (the output norms ``norm{i}`` may be missing).

    Returns:
        (loaded, missing, unexpected): key lists.
    """
    raw = load_checkpoint_file(checkpoint, map_location=map_location)
    state_dict, dropped = convert_checkpoint(raw, model, prefix=prefix)
    missing, unexpected = check_state_dict(state_dict, model, source=f'checkpoint {checkpoint!r}',
                                           strict=strict)
    loadable = {key: value for key, value in state_dict.items() if key not in unexpected}
    model.load_state_dict(loadable, strict=False)
    print_log(
        f'NAT: loaded {len(loadable)} tensors from {checkpoint}; ignored {len(dropped)} '
        f'non-backbone tensors ({summarize_keys(dropped)}); kept initial values of '
        f'{len(missing)} tensors missing from the checkpoint ({summarize_keys(missing)}); '
        f'unexpected: {summarize_keys(unexpected)}.', logger='current')
    return list(loadable), missing, unexpected
