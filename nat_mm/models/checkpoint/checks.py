"""Stage 3 of the checkpoint pipeline: fit the renamed checkpoint to the model, or refuse it.

:func:`check_backbone` and :func:`check_classifier` take stage 2's
:data:`~.names.NatNames` and the model, and either return the state dict to load or
raise a :class:`~.messages.CheckpointError` that names the file, what is wrong and
what to do. In order:

1. (classifiers) the head must be there and fit the model's ``head.fc``;
2. a Transformers ``config.json`` must describe the model (:func:`check_config`);
3. output norms ``norm{i}`` of levels the model does not output are left out, and
   relative position bias tables of another kernel size are resized bicubically, with
   one log line (:func:`resize_rpb`): e.g. the 7x7 DiNAT-L ImageNet-22k weights into the
   kernel-11 Mask2Former backbone;
4. the tensors must be NAT / DiNAT weights (not another model's, not a NAT without
   rpb, floating point), of the model's width, variant and shapes; with ``strict``
   every layer must be there and nothing else.
"""
import re
from collections import Counter, namedtuple

import torch.nn.functional as F
from mmengine.logging import print_log

from ..presets import ARCH_SETTINGS
from .messages import CONVERT_COMMAND, DOWNLOAD_COMMAND, CheckpointError, summarize_keys
from .names import to_transformers_names

#: Output norms of the dense-prediction backbone: absent from classification checkpoints.
OUTPUT_NORM_KEY = re.compile(r'^norm\d+\.')
#: The checkpoint tensor whose first dimension is the model's embed_dim C.
WIDTH_KEY = 'patch_embed.proj.1.weight'

#: Stage 3's result: the state dict to load (the model's names), the checkpoint's keys left
#: out (classifier parts, other modules, output norms the model does not have), and the
#: model's keys the state dict lacks / the state dict's keys the model lacks.
Checked = namedtuple('Checked', ['state_dict', 'dropped', 'missing', 'unexpected'])

#: Parameter names that give away other well-known models.
_OTHER_MODELS = (
    ('relative_position_bias_table', 'a Swin Transformer'),
    ('layer1.0.conv1.weight', 'a ResNet'),
    ('cls_token', 'a ViT'),
    ('stages.0.', 'a ConvNeXt-like network'),
)

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


def check_backbone(names, model, source, config=None, strict=True):
    """Stage 3 for a NAT backbone.

    Args:
        names: :data:`~.names.NatNames` of the checkpoint.
        model: the NAT backbone.
        source: how messages name the checkpoint (``"checkpoint 'PATH'"``).
        config: the Transformers ``config.json`` read with the weights (dict), or None.
        strict: refuse layers that do not match the model one-to-one (the output
            norms may be missing) and a ``config.json`` that disagrees with the model.

    Returns:
        :data:`Checked`.
    """
    notes = check_config(config, model, source) if config is not None and strict else []
    state_dict, absent = fit_to_model(names.backbone, model)
    missing, unexpected = check_state_dict(state_dict, model, source, strict=strict,
                                           transformers_layout=names.layout.transformers)
    for note in notes:
        print_log(note, logger='current')
    return Checked(state_dict, names.foreign + names.classifier_keys + absent, missing,
                   unexpected)


def check_classifier(names, model, source, config=None, head=True, checkpoint=None):
    """Stage 3 for a NAT classifier (``model.backbone`` NAT, ``model.head.fc`` linear).

    Args:
        names, source, config: see :func:`check_backbone`.
        model: the classifier; its backbone outputs the last stage only, whose
            output norm ``norm{last}`` is the final norm.
        head: False leaves the head out (its number of classes may differ).
        checkpoint: the path as given, for the commands the messages suggest.

    Returns:
        :data:`Checked` of the backbone (final norm included as ``norm{last}``); the
        head is ``names.head`` (``weight``, ``bias``).
    """
    backbone_model = model.backbone
    last = len(backbone_model.levels) - 1
    if head:
        _check_head(names, model, source, str(checkpoint))
    notes = [] if config is None else check_config(config, backbone_model, source)
    state_dict, absent = fit_to_model(names.backbone, backbone_model)
    state_dict.update({f'norm{last}.{name}': value for name, value in names.final_norm.items()})
    foreign = names.foreign + absent
    if foreign:
        raise CheckpointError(
            f'{source} holds tensors that are neither the backbone nor the classification '
            f'head ({summarize_keys(foreign)}): it is not a checkpoint of a NAT classifier. '
            f'Use a classification checkpoint ({DOWNLOAD_COMMAND} --list)')
    missing, unexpected = check_state_dict(state_dict, backbone_model, source,
                                           transformers_layout=names.layout.transformers)
    if f'norm{last}.weight' not in state_dict:
        raise CheckpointError(
            f'{source} has no final norm (norm.* / layernorm.* / backbone.norm{last}.*): the '
            'file is incomplete. Use an intact classification checkpoint.')
    for note in notes:
        print_log(note, logger='current')
    return Checked(state_dict, [], missing, unexpected)


def _check_head(names, model, source, checkpoint):
    """Raise unless the checkpoint has a head ({'weight', 'bias'}) that fits ``model.head.fc``."""
    head, fc = names.head, model.head.fc
    if not head:
        prefix = ", prefix='backbone.'" if names.layout.wrapped else ''
        raise CheckpointError(
            f'{source} has no classification head (no head.* / classifier.* weights): it is a '
            'backbone, detection or segmentation checkpoint, and a classifier needs the head. '
            'Load only its backbone through the backbone\'s init_cfg and train the head: '
            f"model=dict(init_cfg=None, backbone=dict(init_cfg=dict(type='Pretrained', "
            f"checkpoint={checkpoint!r}{prefix}))), and no load_from (or use a classification "
            f'checkpoint: {DOWNLOAD_COMMAND} --list)')
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
        theirs, mine = read(config[key]), ours[argument]
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
    trained, dilated = config.get('dilations') or [[1]], ours['dilations']
    trained_dilated = any(d != 1 for stage in trained for d in stage)
    if trained_dilated == any(d != 1 for stage in dilated for d in stage):
        return []
    return [f'NAT: {source} was trained {"with" if trained_dilated else "without"} '
            f'dilations (config.json dilations={config.get("dilations")}), the model has '
            f'dilations={dilated} (set the NAT argument dilations to change them; '
            'dilations add no parameters, the weights load either way)']


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


def fit_to_model(backbone, model):
    """The backbone state dict without what the model does not have, rpb tables resized.

    Args:
        backbone: name -> tensor in nat_mm's names (stage 2's ``NatNames.backbone``).
        model: the NAT backbone; only its state-dict keys and shapes are read.

    Returns:
        (state_dict, absent): a new dict, and the output norms ``norm{i}`` of levels
        the model does not output (a detector's norm0..norm2 for a classifier's
        backbone), left out.

    Raises:
        CheckpointError: an rpb table of the model's head count that is not
            (heads, 2K-1, 2K-1) with an odd square size.
    """
    model_state = model.state_dict()
    absent = [key for key in backbone if OUTPUT_NORM_KEY.match(key) and key not in model_state]
    state_dict = {key: value for key, value in backbone.items() if key not in absent}
    resized = Counter()
    for key, value in state_dict.items():
        target = model_state.get(key)
        if not key.endswith('attn.rpb') or target is None or value.shape == target.shape:
            continue
        if value.dim() and value.shape[0] != target.shape[0]:
            continue  # another variant's table: check_state_dict reports it
        if value.dim() != 3 or value.shape[1] != value.shape[2] or value.shape[1] % 2 == 0:
            raise CheckpointError(
                f'checkpoint tensor {key} has shape {tuple(value.shape)}: it cannot be resized '
                f"to the model's {tuple(target.shape)} (kernel {(target.shape[-1] + 1) // 2}), "
                'because a relative position bias table must be (heads, 2K-1, 2K-1) with an odd '
                'square size. Use a checkpoint of NAT/DiNAT classification weights (any kernel '
                f'size) or one converted with {CONVERT_COMMAND}')
        state_dict[key] = resize_rpb(value, (target.shape[-1] + 1) // 2)
        resized[(value.shape[-1], target.shape[-1])] += 1
    if resized:
        (old, new), _ = resized.most_common(1)[0]
        print_log(
            f'NAT: resized {sum(resized.values())} relative position bias tables (bicubic) '
            f'from {old}x{old} (kernel {(old + 1) // 2}) in the checkpoint to the model\'s '
            f'{new}x{new} (kernel {(new + 1) // 2})'
            + ('' if len(resized) == 1 else f' (and {len(resized) - 1} other size pairs)'),
            logger='current')
    return state_dict, absent


def check_state_dict(state_dict, model, source, strict=True, transformers_layout=False):
    """Compare a converted state dict with ``model``; raise on anything that would load partially.

    A checkpoint of another model, a NAT without rpb and non-float tensors
    raise (:func:`check_nat_weights`), and so do another width and shape
    mismatches. With ``strict``, keys the model has but the checkpoint lacks
    (other than the output norms ``norm{i}``) and keys the model does not have
    also raise; with ``transformers_layout`` the message gives the missing
    tensors' Transformers names too.

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
    settings = getattr(model, 'arch_settings', None)
    arch = ('unknown settings' if not settings else
            f"embed_dim={settings['embed_dim']}, depths={list(settings['depths'])}, "
            f"num_heads={list(settings['num_heads'])}, layer_scale={settings['layer_scale']}")
    arch_hint = (f'Is it a checkpoint of another NAT variant? The model is '
                 f'{type(model).__name__} with {arch}.')
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


def check_nat_weights(state_dict, model_state, source):
    """Refuse a converted state dict that holds no usable NAT / DiNAT weights.

    Args:
        state_dict: the converted checkpoint (nat_mm's names).
        model_state: the model's ``state_dict()``.
        source: how to name the checkpoint in messages.

    Raises:
        CheckpointError: no tensor has a NAT name (a checkpoint of another
            model); the model has relative position biases and the checkpoint
            has attention weights but none (a NAT trained with NATTEN >= 0.20);
            a tensor the model would take is not floating point.
    """
    if state_dict and not any(key in model_state for key in state_dict):
        keys = list(state_dict)
        guess = next((name for marker, name in _OTHER_MODELS
                      if any(marker in key for key in keys)), 'another model')
        raise CheckpointError(
            f'{source} holds no NAT / DiNAT weights: none of its {len(keys)} tensors has a NAT '
            f'parameter name (first: {", ".join(keys[:3])}); it looks like a checkpoint of '
            f'{guess}. Use a NAT / DiNAT checkpoint (official .pth or a shi-labs/nat-*, '
            'shi-labs/dinat-* Hub snapshot), or set prefix= in the Pretrained init_cfg if the '
            'backbone sits under a prefix.')
    model_has_rpb = any(key.endswith('attn.rpb') for key in model_state)
    if (model_has_rpb and not any(key.endswith('attn.rpb') for key in state_dict)
            and any(key.endswith('attn.qkv.weight') for key in state_dict)):
        raise CheckpointError(
            f'{source} has attention weights but no relative position biases (attn.rpb): a NAT '
            'trained with NATTEN >= 0.20, which dropped them. The published NAT / DiNAT weights '
            'and nat_mm use them, and these weights were trained without: they would give other '
            'numbers. Use the published weights, or train from scratch '
            '(--cfg-options model.backbone.init_cfg=None).')
    for key, value in state_dict.items():
        if key in model_state and not value.is_floating_point():
            raise CheckpointError(
                f'{source}: tensor {key} is {str(value.dtype).replace("torch.", "")}, not a '
                'floating-point type: the file was not written from NAT weights (or was written '
                'with the wrong dtype). Use the published checkpoint or re-export the weights as '
                'float32.')


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
