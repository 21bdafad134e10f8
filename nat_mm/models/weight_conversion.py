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
  kernel size differs (one log line says so): e.g. the 7x7 DiNAT-L ImageNet-22k
  weights into the kernel-11 Mask2Former backbone.

The ImageNet-22k DiNAT-L files (``dinat_large_in22k_224.pth``, 21841-class head,
and its 22k->1k fine-tuned sibling, 1000 classes) load like the others: the
head is dropped whatever its number of classes.

Hugging Face Hub copies in Transformers' layout (a snapshot folder with
``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``, or one of those
files) are recognised by their keys and renamed
(:mod:`nat_mm.models.transformers_layout`); their ``config.json`` is checked
against the model.

:func:`prepare_state_dict` reads a checkpoint (:mod:`nat_mm.models.checkpoint_files`),
converts it and checks it against the model; :func:`load_pretrained` (used by
``NAT.init_weights`` for ``init_cfg=dict(type='Pretrained', checkpoint=...)``)
loads the result. Both refuse partial loads; every problem is a
:class:`~nat_mm.models.checkpoint_files.CheckpointError` naming the file, what is
wrong and what to do.
"""
import re
from collections import Counter

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from .checkpoint_files import CheckpointError, check_nat_weights, read_checkpoint
from .presets import ARCH_SETTINGS
from .transformers_layout import (check_config, from_transformers_layout, is_transformers_layout,
                                  to_transformers_names)

#: Keys of the classifier that the backbone does not have.
CLASSIFICATION_ONLY_PREFIXES = ('head.', 'norm.')
#: Prefixes added by wrappers, stripped from every key.
WRAPPER_PREFIXES = ('module.',)
#: Prefix of the backbone inside a detector/segmentor checkpoint.
BACKBONE_PREFIX = 'backbone.'
#: Output norms of the dense-prediction backbone: absent from classification checkpoints.
OUTPUT_NORM_KEY = re.compile(r'^norm\d+\.')

#: The checkpoint tensor whose first dimension is the model's embed_dim C.
WIDTH_KEY = 'patch_embed.proj.1.weight'


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
            f'entries {non_tensors[:5]} are not tensors. Give a file saved as '
            'torch.save(model.state_dict(), path), or a training checkpoint holding one')
    return dict(checkpoint)


def strip_wrapper_prefixes(key):
    """``key`` without the ``module.`` prefixes wrappers such as DataParallel add."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split('.', 1)[1]
    return key


def strip_prefixes(state_dict):
    """Remove ``module.`` prefixes; keep only the ``backbone.`` part of a full model.

    Returns:
        (state_dict, dropped): the renamed dict and the keys that were not
        under ``backbone.`` when some were.
    """
    renamed = {strip_wrapper_prefixes(key): value for key, value in state_dict.items()}
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
        model: the NAT backbone; only its state-dict keys and shapes are read, to
            resize rpb tables and to leave out output norms it does not have.
        prefix: if given, keep only keys starting with it, and strip it.

    Returns:
        (state_dict, dropped): the backbone state dict and the keys left out
        (classification head/norm, non-backbone modules, output norms ``norm{i}`` of
        levels the model does not output). A checkpoint in
        Transformers' layout comes out in nat_mm's names.
    """
    state_dict = unwrap_state_dict(checkpoint)
    dropped = []
    if prefix:
        dropped = [key for key in state_dict if not key.startswith(prefix)]
        state_dict = {key[len(prefix):]: value for key, value in state_dict.items()
                      if key.startswith(prefix)}
    state_dict, not_backbone = strip_prefixes(state_dict)
    dropped += not_backbone
    if is_transformers_layout(state_dict):
        state_dict, classifier = from_transformers_layout(state_dict)
        dropped += classifier
    model_state = model.state_dict()
    # the output norms of levels the model does not output (a detector's norm0..norm2 for a
    # classifier's backbone) are as foreign to it as the classification head
    not_loaded = [key for key in state_dict if key.startswith(CLASSIFICATION_ONLY_PREFIXES)
                  or (OUTPUT_NORM_KEY.match(key) and key not in model_state)]
    dropped += not_loaded
    state_dict = {key: value for key, value in state_dict.items() if key not in not_loaded}
    resized = _resize_rpb_tables(state_dict, model_state)
    if resized:
        (old, new), count = resized.most_common(1)[0]
        print_log(
            f'NAT: resized {sum(resized.values())} relative position bias tables (bicubic) '
            f'from {_describe_rpb(old)} in the checkpoint to the model\'s {_describe_rpb(new)}'
            + ('' if len(resized) == 1 else f' (and {len(resized) - 1} other size pairs)'),
            logger='current')
    return state_dict, dropped


def _describe_rpb(size):
    return f'{size}x{size} (kernel {(size + 1) // 2})'


def _resize_rpb_tables(state_dict, model_state):
    """Resize, in place, the rpb tables whose kernel size differs from the model's.

    A table of the model's number of heads is resizable when it is a square
    (heads, 2K-1, 2K-1); tables with other head counts are left for
    :func:`check_state_dict` (they come from another variant).

    Returns:
        Counter of (checkpoint size, model size) -> number of resized tables.
    """
    resized = Counter()
    for key, value in state_dict.items():
        target = model_state.get(key)
        if not key.endswith('attn.rpb') or target is None or value.shape == target.shape:
            continue
        if value.dim() and value.shape[0] != target.shape[0]:
            continue
        if value.dim() != 3 or value.shape[1] != value.shape[2] or value.shape[1] % 2 == 0:
            raise CheckpointError(
                f'checkpoint tensor {key} has shape {tuple(value.shape)}: it cannot be resized '
                f"to the model's {tuple(target.shape)} (kernel {(target.shape[-1] + 1) // 2}), "
                'because a relative position bias table must be (heads, 2K-1, 2K-1) with an odd '
                'square size. Use a checkpoint of NAT/DiNAT classification weights (any kernel '
                'size) or one converted with tools/model_converters/nat2mm.py')
        state_dict[key] = resize_rpb(value, (target.shape[-1] + 1) // 2)
        resized[(value.shape[-1], target.shape[-1])] += 1
    return resized


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


def check_state_dict(state_dict, model, source, strict=True, transformers_layout=False):
    """Compare a converted state dict with ``model``; raise on anything that would load partially.

    A checkpoint of another model, a NAT without rpb and non-float tensors
    raise (:func:`~nat_mm.models.checkpoint_files.check_nat_weights`), and
    shape mismatches. With ``strict``, keys the model has but the checkpoint
    lacks (other than the output norms ``norm{i}``) and keys the model does not
    have also raise; with ``transformers_layout`` the message gives the
    missing tensors' Transformers names too.

    Returns:
        (missing, unexpected) key lists.

    Raises:
        CheckpointError: naming the file (``source``), the problem and the fix.
    """
    model_state = model.state_dict()
    check_nat_weights(state_dict, model_state, source)
    _check_width(state_dict, model_state, source)
    mismatched = [(key, tuple(value.shape), tuple(model_state[key].shape))
                  for key, value in state_dict.items()
                  if key in model_state and value.shape != model_state[key].shape]
    arch_hint = (f'Is it a checkpoint of another NAT variant? The model is '
                 f'{type(model).__name__} with {_describe_arch(model)}.')
    if mismatched:
        details = '; '.join(f'{key}: checkpoint {ckpt} vs model {ours}'
                            for key, ckpt, ours in mismatched[:5])
        raise CheckpointError(
            f'{source}: {len(mismatched)} tensors have shapes that do not fit the model, first '
            f'{details}. {arch_hint}')
    missing = [key for key in model_state if key not in state_dict]
    unexpected = [key for key in state_dict if key not in model_state]
    missing_layers = [key for key in missing if not OUTPUT_NORM_KEY.match(key)]
    if strict and (missing_layers or unexpected):
        hub_names = (f"; in Transformers' names: "
                     f"{', '.join(to_transformers_names(missing_layers)[:6])}"
                     if transformers_layout and missing_layers else '')
        raise CheckpointError(
            f'{source} does not match the model: it lacks {len(missing_layers)} tensors '
            f'({summarize_keys(missing_layers)}{hub_names}) and has {len(unexpected)} unknown '
            f'tensors ({summarize_keys(unexpected)}). {arch_hint} (Pass strict=False in the '
            'Pretrained init_cfg to load the matching part anyway.)')
    return missing, unexpected


def _check_width(state_dict, model_state, source):
    """Refuse a checkpoint of another embed_dim, naming both widths and the archs of that width."""
    if WIDTH_KEY not in state_dict or WIDTH_KEY not in model_state:
        return
    ckpt_width, model_width = state_dict[WIDTH_KEY].shape[0], model_state[WIDTH_KEY].shape[0]
    if ckpt_width == model_width:
        return
    archs = [name for name, settings in ARCH_SETTINGS.items()
             if settings['embed_dim'] == ckpt_width]
    hint = (f"arch {' or '.join(repr(a) for a in archs)} has that width" if archs
            else 'no published arch has that width')
    raise CheckpointError(
        f'{source} is for another width: its embed_dim is {ckpt_width} ({WIDTH_KEY} '
        f'{tuple(state_dict[WIDTH_KEY].shape)}), the model\'s is {model_width}. Use the '
        f'checkpoint of the model\'s variant, or build the model for this checkpoint ({hint}).')


def _describe_arch(model):
    settings = getattr(model, 'arch_settings', None)
    if not settings:
        return 'unknown settings'
    return (f"embed_dim={settings['embed_dim']}, depths={list(settings['depths'])}, "
            f"num_heads={list(settings['num_heads'])}, layer_scale={settings['layer_scale']}")


def prepare_state_dict(checkpoint, model, prefix=None, map_location='cpu', strict=True):
    """Read, convert and check a checkpoint for ``model`` without loading it.

    Args:
        checkpoint: path of a checkpoint file or Hub snapshot folder, or a URL
            (see :func:`~nat_mm.models.checkpoint_files.read_checkpoint`).
        model: the NAT backbone.
        prefix: keep only the keys under this prefix (e.g. 'backbone.').
        map_location: passed to the loader.
        strict: refuse checkpoints whose layers do not match the model
            one-to-one (the output norms ``norm{i}`` may be missing), and a
            Transformers ``config.json`` that disagrees with the model.

    Returns:
        (state_dict, dropped, missing, unexpected): the backbone state dict
        in nat_mm's names and the key lists.

    Raises:
        CheckpointError: naming the file, what is wrong and what to do.
    """
    file = read_checkpoint(checkpoint, map_location=map_location)
    source = f'checkpoint {file.path!r}'
    notes = check_config(file.config, model, source) if file.config is not None and strict else []
    raw_state = unwrap_state_dict(file.checkpoint)
    state_dict, dropped = convert_checkpoint(raw_state, model, prefix=prefix)
    missing, unexpected = check_state_dict(
        state_dict, model, source=source, strict=strict,
        transformers_layout=is_transformers_layout(raw_state))
    for note in notes:
        print_log(note, logger='current')
    return state_dict, dropped, missing, unexpected


def load_pretrained(model, checkpoint, prefix=None, map_location='cpu', strict=True):
    """Load an official, converted or Hub (Transformers-layout) checkpoint into ``model``.

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
