"""Stage 2 of the checkpoint pipeline: a loaded checkpoint in nat_mm's names.

:func:`to_nat_names` unwraps a checkpoint once, decides its layout once
(:func:`detect_layout`) and splits it once into the backbone (nat_mm's names), the
classifier's final norm and head, and the rest:

- official files (``nat_{mini,tiny,small,base}.pth``): the backbone's keys, the final
  ``norm.*`` and the ``head.*``;
- checkpoints MMEngine saved from a whole model (``{'state_dict': ...}``, keys under
  ``backbone.``; a classifier's head under ``head.fc.``; everything else is another
  module of the detector / segmentor); any layout may also carry the ``module.``
  prefixes of DataParallel and a ``{'model': ...}`` wrapper;
- Hugging Face Transformers' layout (the ``shi-labs/*`` Hub copies,
  ``NatForImageClassification`` / ``DinatForImageClassification``): an optional
  ``nat.`` / ``dinat.`` prefix, ``layernorm.*`` and ``classifier.*`` for the final
  norm and head, and the body renamed by :func:`from_transformers_layout`.

Transformers (after the optional ``nat.`` / ``dinat.``) -> nat_mm:

- ``embeddings.patch_embeddings.projection.{0,1}.*`` -> ``patch_embed.proj.{0,1}.*``;
  ``embeddings.norm.*`` -> ``patch_embed.norm.*``
- ``encoder.levels.{i}.layers.{j}.`` -> ``levels.{i}.blocks.{j}.``, and in it:
  ``layernorm_before`` -> ``norm1``; ``attention.self.{query,key,value}.*`` ((C, C) and
  (C,) each) -> ``attn.qkv.*`` ((3C, C), (3C,): q, k, v stacked);
  ``attention.self.rpb`` -> ``attn.rpb``; ``attention.output.dense`` -> ``attn.proj``;
  ``layernorm_after`` -> ``norm2``; ``intermediate.dense`` -> ``mlp.fc1``;
  ``output.dense`` -> ``mlp.fc2``; ``layer_scale_parameters`` (2, C) -> ``gamma1`` (row 0)
  and ``gamma2`` (row 1)
- ``encoder.levels.{i}.downsample.{reduction,norm}.*`` -> ``levels.{i}.downsample.*``
- ``hidden_states_norms.stage{k}.*`` (a backbone checkpoint's) -> ``norm{k-1}.*``

:func:`to_transformers_names` goes the other way, for messages.

Nothing here looks at the model: matching it is stage 3 (:mod:`.checks`).
"""
import re
from collections import namedtuple

import torch

#: Prefix of the backbone inside a checkpoint of a whole model (detector, segmentor,
#: MMPretrain classifier).
BACKBONE_PREFIX = 'backbone.'
#: Where MMPretrain's LinearClsHead keeps its linear layer.
MMPRETRAIN_HEAD_PREFIX = 'head.fc.'
#: Official classifier keys: the final norm and the head.
OFFICIAL_NORM_PREFIX = 'norm.'
OFFICIAL_HEAD_PREFIX = 'head.'
#: The classifier's final norm and linear head in Transformers' names (after the model prefix).
CLASSIFIER_NORM_PREFIX = 'layernorm.'
CLASSIFIER_HEAD_PREFIX = 'classifier.'

#: A key with the ``module.`` prefixes wrappers such as DataParallel add.
_WRAPPER_PREFIX = re.compile(r'^(?:module\.)+')
#: The ``nat.`` / ``dinat.`` prefix of the body inside a Transformers classifier; a bare
#: NatModel / backbone has none.
_MODEL_PREFIX = re.compile(r'^(?:nat|dinat)\.')
#: Key starts that only Transformers' layout has (after the model prefix).
_TRANSFORMERS_KEY = re.compile(r'^(?:(?:nat|dinat)\.)?(?:embeddings\.patch_embeddings\.|'
                               r'encoder\.levels\.)')
_CLASSIFIER_PART = re.compile(r'^(?:(?:nat|dinat)\.)?(layernorm|classifier)\.(.+)$')

_EMBEDDING = re.compile(r'^embeddings\.(?:patch_embeddings\.projection\.(\d)|(norm))\.(\w+)$')
_LAYER = re.compile(r'^encoder\.levels\.(\d+)\.layers\.(\d+)\.(.+)$')
_DOWNSAMPLE = re.compile(r'^encoder\.levels\.(\d+)\.downsample\.((?:reduction|norm)\.\w+)$')
_OUTPUT_NORM = re.compile(r'^hidden_states_norms\.stage(\d+)\.(\w+)$')
_QKV = re.compile(r'^attention\.self\.(query|key|value)\.(weight|bias)$')
#: Transformers' module inside a layer -> nat_mm's module inside a block.
LAYER_MODULES = {
    'layernorm_before': 'norm1',
    'attention.output.dense': 'attn.proj',
    'layernorm_after': 'norm2',
    'intermediate.dense': 'mlp.fc1',
    'output.dense': 'mlp.fc2',
}
_QKV_ORDER = ('query', 'key', 'value')
#: nat_mm's module inside a block -> Transformers' module inside a layer.
_TRANSFORMERS_MODULES = {nat: hub for hub, nat in LAYER_MODULES.items()}

#: How a checkpoint is laid out: ``wrapped``, the backbone sits under ``backbone.`` (a
#: whole model saved by MMEngine); ``transformers``, the backbone has Transformers' names.
Layout = namedtuple('Layout', ['wrapped', 'transformers'])

#: A checkpoint in nat_mm's names. ``backbone``: name -> tensor in the backbone's names;
#: ``final_norm``, ``head``: {'weight', 'bias'} -> tensor of the classifier's final norm and
#: linear head (empty when absent; an MMPretrain classifier's final norm stays in
#: ``backbone`` as its last output norm); ``classifier_keys``: the checkpoint's own names of
#: those two; ``foreign``: keys of other modules (a detector's neck and heads, the keys
#: outside ``prefix``); ``layout``: :data:`Layout`.
NatNames = namedtuple('NatNames', ['backbone', 'final_norm', 'head', 'classifier_keys',
                                   'foreign', 'layout'])


def unwrap_state_dict(checkpoint):
    """The state dict inside a loaded checkpoint.

    Args:
        checkpoint: a state dict (name -> tensor) or a dict holding one under
            'state_dict' or 'model'.

    Returns:
        dict name -> tensor (a new dict).

    Raises:
        TypeError: not a dict, or entries that are not tensors.
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


def detect_layout(state_dict):
    """The :data:`Layout` of a state dict whose ``module.`` prefixes are stripped."""
    wrapped = any(key.startswith(BACKBONE_PREFIX) for key in state_dict)
    body = [key[len(BACKBONE_PREFIX):] for key in state_dict
            if key.startswith(BACKBONE_PREFIX)] if wrapped else state_dict
    return Layout(wrapped, any(_TRANSFORMERS_KEY.match(key) for key in body))


def _take(state_dict, *prefixes):
    """Remove the keys under each of ``prefixes`` from ``state_dict``.

    Returns:
        list of dicts, one per prefix: its keys without the prefix -> tensors.
    """
    taken = [{} for _ in prefixes]
    for key in list(state_dict):
        for part, prefix in zip(taken, prefixes):
            if key.startswith(prefix):
                part[key[len(prefix):]] = state_dict.pop(key)
                break
    return taken


def to_nat_names(checkpoint, prefix=None):
    """Split a loaded checkpoint into backbone (nat_mm's names), final norm, head and the rest.

    Args:
        checkpoint: the object read from the file (see :func:`unwrap_state_dict`).
        prefix: if given, keep only keys starting with it, and strip it (the others
            are ``foreign``).

    Returns:
        :data:`NatNames`.
    """
    state_dict = unwrap_state_dict(checkpoint)
    foreign = []
    if prefix:
        foreign = [key for key in state_dict if not key.startswith(prefix)]
        state_dict = {key[len(prefix):]: value for key, value in state_dict.items()
                      if key.startswith(prefix)}
    state_dict = {_WRAPPER_PREFIX.sub('', key): value for key, value in state_dict.items()}
    layout = detect_layout(state_dict)
    final_norm, head, classifier_keys = {}, {}, []
    if layout.wrapped:
        backbone, head = _take(state_dict, BACKBONE_PREFIX, MMPRETRAIN_HEAD_PREFIX)
        classifier_keys = [MMPRETRAIN_HEAD_PREFIX + name for name in head]
        # a backbone has no head or final norm of its own: such keys are not NAT's
        foreign += list(state_dict) + [BACKBONE_PREFIX + key for key in backbone
                                       if key.startswith((OFFICIAL_HEAD_PREFIX,
                                                          OFFICIAL_NORM_PREFIX))]
        state_dict = {key: value for key, value in backbone.items()
                      if not key.startswith((OFFICIAL_HEAD_PREFIX, OFFICIAL_NORM_PREFIX))}
    if layout.transformers:
        renamed, transformers_classifier = from_transformers_layout(state_dict)
        for key in transformers_classifier:
            part, name = _CLASSIFIER_PART.match(key).groups()
            (final_norm if part == 'layernorm' else head)[name] = state_dict[key]
        classifier_keys += transformers_classifier
        state_dict = renamed
    elif not layout.wrapped:
        final_norm, head = _take(state_dict, OFFICIAL_NORM_PREFIX, OFFICIAL_HEAD_PREFIX)
        classifier_keys = ([OFFICIAL_NORM_PREFIX + name for name in final_norm]
                           + [OFFICIAL_HEAD_PREFIX + name for name in head])
    return NatNames(state_dict, final_norm, head, classifier_keys, foreign, layout)


def from_transformers_layout(state_dict):
    """Rename a Transformers-layout NAT / DiNAT state dict to nat_mm's names.

    Args:
        state_dict: name -> tensor, keys with or without ``nat.`` / ``dinat.``.
            query / key / value weights (C, C) and biases (C,) per layer;
            ``layer_scale_parameters`` (2, C).

    Returns:
        (state_dict, dropped): nat_mm's names -> tensors (``attn.qkv.weight``
        (3C, C) and ``attn.qkv.bias`` (3C,), ``gamma1`` / ``gamma2`` (C,)), and
        the classifier's keys (final norm and head) left out, under their own names.
        Keys this layout does not know are kept under their own names (stage 3
        reports them); a layer whose query, key and value are not all there keeps
        them under their own names too.
    """
    converted, dropped, qkv_parts = {}, [], {}
    for original, value in state_dict.items():
        key = _MODEL_PREFIX.sub('', original)
        if key.startswith((CLASSIFIER_NORM_PREFIX, CLASSIFIER_HEAD_PREFIX)):
            dropped.append(original)
            continue
        match = _EMBEDDING.match(key)
        if match:
            conv, norm, param = match.groups()
            module = f'patch_embed.proj.{conv}' if norm is None else 'patch_embed.norm'
            converted[f'{module}.{param}'] = value
            continue
        match = _DOWNSAMPLE.match(key)
        if match:
            converted[f'levels.{match[1]}.downsample.{match[2]}'] = value
            continue
        match = _OUTPUT_NORM.match(key)
        if match:
            converted[f'norm{int(match[1]) - 1}.{match[2]}'] = value
            continue
        match = _LAYER.match(key)
        if not match:
            converted[original] = value
            continue
        block, rest = f'levels.{match[1]}.blocks.{match[2]}', match[3]
        qkv = _QKV.match(rest)
        module, _, param = rest.rpartition('.')
        if qkv:
            qkv_parts.setdefault((block, qkv[2]), {})[qkv[1]] = (original, value)
        elif rest == 'attention.self.rpb':
            converted[f'{block}.attn.rpb'] = value
        elif rest == 'layer_scale_parameters' and value.dim() == 2 and value.shape[0] == 2:
            converted[f'{block}.gamma1'], converted[f'{block}.gamma2'] = value[0], value[1]
        elif module in LAYER_MODULES:
            converted[f'{block}.{LAYER_MODULES[module]}.{param}'] = value
        else:
            converted[original] = value
    for (block, param), parts in qkv_parts.items():
        if len(parts) == len(_QKV_ORDER):
            converted[f'{block}.attn.qkv.{param}'] = torch.cat(
                [parts[name][1] for name in _QKV_ORDER])
        else:
            converted.update(dict(parts.values()))
    return converted, dropped


def to_transformers_names(keys):
    """Transformers' names of nat_mm state-dict keys (for messages).

    ``levels.0.blocks.1.attn.qkv.weight`` ->
    ``encoder.levels.0.layers.1.attention.self.{query,key,value}.weight``; keys
    without a Transformers counterpart are returned unchanged.

    Args:
        keys: list of str.

    Returns:
        list of str, without repeats (q, k and v of a layer are one name).
    """
    names = []
    for key in keys:
        block = re.match(r'^levels\.(\d+)\.blocks\.(\d+)\.(.+)$', key)
        name = key
        if block:
            layer, rest = f'encoder.levels.{block[1]}.layers.{block[2]}', block[3]
            module, _, param = rest.rpartition('.')
            if rest == 'attn.rpb':
                name = f'{layer}.attention.self.rpb'
            elif module == 'attn.qkv':
                name = f'{layer}.attention.self.{{query,key,value}}.{param}'
            elif rest in ('gamma1', 'gamma2'):
                name = f'{layer}.layer_scale_parameters'
            elif module in _TRANSFORMERS_MODULES:
                name = f'{layer}.{_TRANSFORMERS_MODULES[module]}.{param}'
        elif key.startswith('patch_embed.proj.'):
            name = 'embeddings.patch_embeddings.projection.' + key[len('patch_embed.proj.'):]
        elif key.startswith('patch_embed.norm.'):
            name = 'embeddings.norm.' + key[len('patch_embed.norm.'):]
        elif re.match(r'^levels\.\d+\.downsample\.', key):
            name = 'encoder.' + key
        if name not in names:
            names.append(name)
    return names
