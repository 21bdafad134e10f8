"""NAT / DiNAT checkpoints in Hugging Face Transformers' layout (the ``shi-labs/*`` Hub copies).

The Hub repositories ``shi-labs/nat-*`` and ``shi-labs/dinat-*`` hold the published
ImageNet weights as Transformers' ``NatForImageClassification`` /
``DinatForImageClassification`` saved them: ``config.json`` plus ``model.safetensors``
or ``pytorch_model.bin``, with Transformers' parameter names. The tensors are the
official ones, renamed (and q, k, v split), so they map one-to-one onto nat_mm's
parameters:

Transformers (after an optional ``nat.`` / ``dinat.``) -> nat_mm:

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
- ``layernorm.*``, ``classifier.*`` (the classifier's final norm and head): dropped

:func:`check_config` compares the ``config.json`` saved with the weights with the
model being built.
"""
import re

import torch

from .checkpoint_files import CheckpointError

#: Prefix of the body inside a Transformers classifier (NatForImageClassification,
#: DinatForImageClassification); a bare NatModel / backbone has none.
MODEL_PREFIXES = ('nat.', 'dinat.')
#: The classifier's final norm and linear head (after the model prefix).
CLASSIFIER_NORM_PREFIX = 'layernorm.'
CLASSIFIER_HEAD_PREFIX = 'classifier.'
#: Keys of the classifier that are not the backbone's.
CLASSIFIER_ONLY_PREFIXES = (CLASSIFIER_NORM_PREFIX, CLASSIFIER_HEAD_PREFIX)
#: Key starts that only Transformers' layout has.
LAYOUT_MARKERS = ('embeddings.patch_embeddings.', 'encoder.levels.')

_EMBEDDING = re.compile(r'^embeddings\.(?:patch_embeddings\.projection\.(\d)|(norm))\.(\w+)$')
_LAYER = re.compile(r'^encoder\.levels\.(\d+)\.layers\.(\d+)\.(.+)$')
_DOWNSAMPLE = re.compile(r'^encoder\.levels\.(\d+)\.downsample\.((?:reduction|norm)\.\w+)$')
_OUTPUT_NORM = re.compile(r'^hidden_states_norms\.stage(\d+)\.(\w+)$')
_QKV = re.compile(r'^attention\.self\.(query|key|value)\.(weight|bias)$')
#: Transformers' module inside a layer -> nat_mm's module inside a block.
_LAYER_MODULES = {
    'layernorm_before': 'norm1',
    'attention.output.dense': 'attn.proj',
    'layernorm_after': 'norm2',
    'intermediate.dense': 'mlp.fc1',
    'output.dense': 'mlp.fc2',
}
_QKV_ORDER = ('query', 'key', 'value')
#: nat_mm's module inside a block -> Transformers' module inside a layer.
_NAT_MODULES = {nat: hub for hub, nat in _LAYER_MODULES.items()}


def strip_model_prefix(key):
    """``key`` without the classifier's ``nat.`` / ``dinat.`` prefix."""
    for prefix in MODEL_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def is_transformers_layout(state_dict):
    """Whether a state dict has Transformers' NAT / DiNAT parameter names."""
    return any(strip_model_prefix(key).startswith(LAYOUT_MARKERS) for key in state_dict)


def from_transformers_layout(state_dict):
    """Rename a Transformers-layout NAT / DiNAT state dict to nat_mm's names.

    Args:
        state_dict: name -> tensor, keys with or without ``nat.`` / ``dinat.``.
            query / key / value weights (C, C) and biases (C,) per layer;
            ``layer_scale_parameters`` (2, C).

    Returns:
        (state_dict, dropped): nat_mm's names -> tensors (``attn.qkv.weight``
        (3C, C) and ``attn.qkv.bias`` (3C,), ``gamma1`` / ``gamma2`` (C,)), and
        the classifier's keys left out. Keys this layout does not know are kept
        under their own names (the caller's check reports them); a layer whose
        query, key and value are not all there keeps them under their own names too.
    """
    converted, dropped, qkv_parts = {}, [], {}
    for original, value in state_dict.items():
        key = strip_model_prefix(original)
        if key.startswith(CLASSIFIER_ONLY_PREFIXES):
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
        if qkv:
            qkv_parts.setdefault((block, qkv[2]), {})[qkv[1]] = (original, value)
        elif rest == 'attention.self.rpb':
            converted[f'{block}.attn.rpb'] = value
        elif rest == 'layer_scale_parameters' and value.dim() == 2 and value.shape[0] == 2:
            converted[f'{block}.gamma1'], converted[f'{block}.gamma2'] = value[0], value[1]
        else:
            module, _, param = rest.rpartition('.')
            if module in _LAYER_MODULES:
                converted[f'{block}.{_LAYER_MODULES[module]}.{param}'] = value
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
    """
    names = []
    for key in keys:
        match = re.match(r'^levels\.(\d+)\.blocks\.(\d+)\.(.+)$', key)
        if match:
            layer, rest = f'encoder.levels.{match[1]}.layers.{match[2]}', match[3]
            module, _, param = rest.rpartition('.')
            if rest == 'attn.rpb':
                name = f'{layer}.attention.self.rpb'
            elif module == 'attn.qkv':
                name = f'{layer}.attention.self.{{query,key,value}}.{param}'
            elif rest in ('gamma1', 'gamma2'):
                name = f'{layer}.layer_scale_parameters'
            elif module in _NAT_MODULES:
                name = f'{layer}.{_NAT_MODULES[module]}.{param}'
            else:
                name = key
        elif key.startswith('patch_embed.proj.'):
            name = 'embeddings.patch_embeddings.projection.' + key[len('patch_embed.proj.'):]
        elif key.startswith('patch_embed.norm.'):
            name = 'embeddings.norm.' + key[len('patch_embed.norm.'):]
        elif re.match(r'^levels\.\d+\.downsample\.', key):
            name = 'encoder.' + key
        else:
            name = key
        if name not in names:
            names.append(name)
    return names


def _model_settings(model):
    """The model's values of the settings a Transformers config.json records."""
    settings = model.arch_settings
    first_attn = model.levels[0].blocks[0].attn if model.levels[0].blocks else None
    return {
        'embed_dim': settings['embed_dim'],
        'depths': list(settings['depths']),
        'num_heads': list(settings['num_heads']),
        'mlp_ratio': float(settings['mlp_ratio']),
        'layer_scale': settings['layer_scale'],
        'kernel_size': model.kernel_size,
        'dilations': [list(stage) for stage in model.dilations],
        'in_channels': model.patch_embed.proj[0].in_channels,
        'qkv_bias': None if first_attn is None else first_attn.qkv.bias is not None,
    }


#: config.json key -> (nat_mm's NAT argument, how a config value reads as that argument).
CONFIG_KEYS = {
    'embed_dim': ('embed_dim', int),
    'depths': ('depths', list),
    'num_heads': ('num_heads', list),
    'mlp_ratio': ('mlp_ratio', float),
    'layer_scale_init_value': ('layer_scale', lambda value: float(value) or None),
    'num_channels': ('in_channels', int),
    'qkv_bias': ('qkv_bias', bool),
}
#: Settings nat_mm does not make configurable: config.json must have these values.
FIXED_CONFIG_VALUES = {'patch_size': 4, 'layer_norm_eps': 1e-5, 'hidden_act': 'gelu'}


def nat_arguments(config):
    """The ``NAT`` arguments that build the model a Transformers ``config.json`` describes.

    Args:
        config: the parsed config.json of a NAT / DiNAT model.

    Returns:
        dict for ``NAT(**arguments)``: arch (a dict), kernel_size, dilations
        (None for NAT), layer_scale (False when off), in_channels, qkv_bias.
    """
    missing = [key for key in ('embed_dim', 'depths', 'num_heads', 'mlp_ratio', 'kernel_size')
               if key not in config]
    if missing:
        raise CheckpointError(
            f'config.json lacks {", ".join(missing)}: it is not the config of a Transformers '
            'NAT / DiNAT model (restore it from the Hub repository)')
    return dict(
        arch=dict(embed_dim=int(config['embed_dim']), depths=list(config['depths']),
                  num_heads=list(config['num_heads']), mlp_ratio=float(config['mlp_ratio'])),
        kernel_size=int(config['kernel_size']),
        dilations=[list(stage) for stage in config['dilations']] if 'dilations' in config
        else None,
        layer_scale=float(config.get('layer_scale_init_value', 0.)) or False,
        in_channels=int(config.get('num_channels', 3)),
        qkv_bias=bool(config.get('qkv_bias', True)))


def _is_dilated(dilations):
    return any(d != 1 for stage in dilations for d in stage)


def check_config(config, model, source):
    """Compare a Transformers ``config.json`` with the model the weights go into.

    Settings that shape the parameters (``embed_dim``, ``depths``,
    ``num_heads``, ``mlp_ratio``, layer scale, input channels, qkv bias) must
    agree, and the ones nat_mm does not make configurable must have its values.
    ``kernel_size`` may differ: the rpb tables are then resized as for the
    official files. ``dilations`` add no parameters and may differ (the
    detection / segmentation configs fine-tune with their own); loading a
    DiNAT checkpoint into a NAT without dilations, or NAT weights into a DiNAT,
    is allowed but returned as a note.

    Args:
        config: the parsed config.json.
        model: the NAT backbone.
        source: how to name the checkpoint in messages.

    Returns:
        list of notes (str) to log.

    Raises:
        CheckpointError: one message listing every disagreement, each with
            config.json's value, the model's and the NAT argument to set.
    """
    ours = _model_settings(model)
    problems = []
    for key, (argument, read) in CONFIG_KEYS.items():
        if key not in config or ours[argument] is None:
            continue
        theirs = read(config[key])
        mine = ours[argument]
        if argument == 'layer_scale':
            if (theirs is None) != (mine is None):
                problems.append(
                    f'config.json has {key}={config[key]!r} (layer scale '
                    f'{"off" if theirs is None else "on"}), the model has layer_scale={mine!r}: '
                    f'set layer_scale={theirs if theirs is not None else False!r}')
        elif theirs != mine:
            problems.append(f'config.json has {key}={config[key]!r}, the model has '
                            f'{argument}={mine!r}: set {argument}={theirs!r}')
    for key, value in FIXED_CONFIG_VALUES.items():
        if key in config and config[key] != value:
            problems.append(f'config.json has {key}={config[key]!r}; nat_mm\'s NAT has {value!r} '
                            'and cannot be configured otherwise')
    if problems:
        raise CheckpointError(
            f'{source} does not fit the model: ' + '; '.join(problems) + '. Set these NAT '
            'arguments in the backbone config (model.backbone), or use the checkpoint of the '
            "model's variant.")
    notes = []
    trained = config.get('dilations') or [[1]]
    if _is_dilated(trained) != _is_dilated(ours['dilations']):
        notes.append(
            f'NAT: {source} was trained {"with" if _is_dilated(trained) else "without"} '
            f'dilations (config.json dilations={config.get("dilations")}), the model has '
            f'dilations={ours["dilations"]} (set the NAT argument dilations to change them; '
            'dilations add no parameters, the weights load either way)')
    return notes
