"""Reading a pretrained checkpoint from disk, and the errors that say what is wrong with it.

:func:`read_checkpoint` accepts what ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``
may name: an official ``.pth`` file (or any PyTorch checkpoint), a Hugging Face Hub
snapshot folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``),
one of those two files alone, or a URL (read by MMEngine). PyTorch files are read
by MMEngine's loader, i.e. ``torch.load`` with torch's weights-only unpickler
(:mod:`nat_mm.utils` allow-lists what MMEngine training checkpoints need);
safetensors files by the ``safetensors`` package.

Every problem with the file itself is a :class:`CheckpointError` whose message
names the file, what is wrong and what to do: a missing path
(:class:`CheckpointNotFoundError`, also a ``FileNotFoundError``), an empty or
truncated file, a file that is not a checkpoint (an image, a web page, text), a
folder without weights, an unreadable ``config.json``; and, checked on the
converted state dict (:func:`check_nat_weights`), a checkpoint of another model,
a NAT without relative position biases (NATTEN >= 0.20) and non-float tensors.
"""
import json
import os.path as osp
from collections import namedtuple

from .presets import HOW_TO_GET_CHECKPOINTS, checkpoint_for_file

#: Weight files of a Transformers (Hub) snapshot, in the order they are looked for.
HUB_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
#: The settings file of a Transformers (Hub) snapshot.
HUB_CONFIG_FILE = 'config.json'
DOWNLOAD_TOOL = 'tools/misc/download_checkpoints.py'


def _what_to_do(path):
    """How to replace a damaged file: its download command when it is a published one."""
    name, entry = checkpoint_for_file(osp.basename(path))
    if name:
        return (f'Download it again: "python {DOWNLOAD_TOOL} {name} --force" (checks the size; or '
                f'by hand from {entry["url"]})')
    return (f'Download it again, or point init_cfg at an intact copy ("python {DOWNLOAD_TOOL} '
            '--list" lists the published checkpoints)')


#: (weights file, config.json as a dict or None, the object loaded from the weights file).
CheckpointFile = namedtuple('CheckpointFile', ['path', 'config', 'checkpoint'])


class CheckpointError(ValueError):
    """A pretrained checkpoint nat_mm cannot load.

    The message names the file, what is wrong with it and what to do.
    """


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The pretrained checkpoint path does not exist."""


#: Leading bytes of common files that are not checkpoints -> what they are.
_OTHER_FILE_SIGNATURES = (
    (b'\x89PNG', 'a PNG image'),
    (b'\xff\xd8\xff', 'a JPEG image'),
    (b'GIF8', 'a GIF image'),
    (b'%PDF', 'a PDF document'),
    (b'\x1f\x8b', 'a gzip archive'),
    (b'<!DOCTYPE', 'an HTML page (a download that returned an error page?)'),
    (b'<html', 'an HTML page (a download that returned an error page?)'),
    (b'{', 'a JSON file'),
    (b'version https://git-lfs', 'a Git LFS pointer (fetch the file itself: git lfs pull)'),
)


def sniff_format(path):
    """What a file holds, from its first bytes.

    Returns:
        'empty', 'torch' (a ``torch.save`` zip or legacy pickle), 'safetensors',
        or a description of another kind of file ('a PNG image', 'text', ...).
    """
    with open(path, 'rb') as file:
        head = file.read(32)
    if not head:
        return 'empty'
    if head.startswith(b'PK\x03\x04') or (head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5):
        return 'torch'
    header_size = int.from_bytes(head[:8], 'little') if len(head) >= 9 else 0
    if head[8:9] == b'{' and 0 < header_size < 2 ** 30:
        return 'safetensors'
    for signature, description in _OTHER_FILE_SIGNATURES:
        if head.lstrip().lower().startswith(signature.lower()):
            return description
    try:
        head.decode('utf-8')
    except UnicodeDecodeError:
        return 'data of an unknown kind'
    return 'text'


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {text[0] if text else ""}'.rstrip(': ')


def _load_safetensors(path):
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointError(
            f'checkpoint {path!r} is a damaged or incomplete safetensors file '
            f'({osp.getsize(path)} bytes; {_first_line(exc)}). {_what_to_do(path)}.') from exc


def _load_torch(path, map_location):
    # Imported here: mmengine.runner imports OpenCV, which the backbone needs nowhere else.
    from mmengine.runner import CheckpointLoader
    try:
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ...
        if 'weights only' in str(exc).lower():
            raise CheckpointError(
                f'checkpoint {path!r} holds Python objects that torch\'s safe weights-only '
                f'loader refuses ({_first_line(exc)}). nat_mm loads weights only: save the '
                "state dict alone (torch.save(model.state_dict(), ...))") from exc
        raise CheckpointError(
            f'checkpoint {path!r} is damaged or incomplete: torch.load cannot read its '
            f'{osp.getsize(path)} bytes ({_first_line(exc)}). {_what_to_do(path)}.') from exc


def _read_config(path):
    try:
        with open(path, encoding='utf-8') as file:
            config = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f'{path!r} is not a readable Transformers config ({_first_line(exc)}): restore it '
            'from the Hub repository, or remove it to load the weights without the '
            'config check') from exc
    if not isinstance(config, dict):
        raise CheckpointError(f'{path!r} is not a Transformers config (not a JSON object)')
    return config


def _hub_weights_file(path):
    """The weights file a local checkpoint path stands for (a folder's Hub weights file)."""
    local = osp.expanduser(str(path))
    if not osp.isdir(local):
        return local
    for name in HUB_WEIGHT_FILES:
        if osp.isfile(osp.join(local, name)):
            return osp.join(local, name)
    raise CheckpointError(
        f'checkpoint folder {str(path)!r} has neither {" nor ".join(HUB_WEIGHT_FILES)}: give a '
        'Hugging Face Hub snapshot folder (config.json + model.safetensors or pytorch_model.bin) '
        f'or a checkpoint file. {HOW_TO_GET_CHECKPOINTS}.')


def read_hub_config(path):
    """The Transformers ``config.json`` that goes with a checkpoint path, or None.

    A Hub snapshot folder's, or the one beside a file named ``model.safetensors``
    or ``pytorch_model.bin``.
    """
    if '://' in str(path):
        return None
    local = _hub_weights_file(path)
    config_path = osp.join(osp.dirname(local), HUB_CONFIG_FILE)
    if osp.basename(local) in HUB_WEIGHT_FILES and osp.isfile(config_path):
        return _read_config(config_path)
    return None


def read_checkpoint(path, map_location='cpu'):
    """Load a checkpoint file, a Hub snapshot folder or a URL.

    Args:
        path: a file (PyTorch or safetensors), a folder holding
            ``model.safetensors`` or ``pytorch_model.bin`` (and usually
            ``config.json``), or a URL.
        map_location: passed to ``torch.load``.

    Returns:
        :data:`CheckpointFile`: the weights file read, the Transformers
        ``config.json`` beside it (a folder's, or the one next to a file named
        ``model.safetensors`` / ``pytorch_model.bin``) or None, and the loaded
        object (a dict).

    Raises:
        CheckpointError: the problem with the file, see the module docstring.
    """
    path = str(path)
    if '://' in path:
        from mmengine.runner import CheckpointLoader
        return CheckpointFile(path, None, CheckpointLoader.load_checkpoint(
            path, map_location=map_location))
    local = _hub_weights_file(path)
    if not osp.isfile(local):
        name, entry = checkpoint_for_file(osp.basename(local))
        this_one = (f'It is the published checkpoint {name!r}: "python {DOWNLOAD_TOOL} {name}" '
                    f'fetches it (official address {entry["url"]}). ' if name else '')
        raise CheckpointNotFoundError(
            f'NAT pretrained checkpoint {path!r} not found. {this_one}{HOW_TO_GET_CHECKPOINTS}.')
    config = read_hub_config(local)
    kind = sniff_format(local)
    if kind == 'empty':
        raise CheckpointError(
            f'checkpoint {local!r} is empty (0 bytes): a download or copy that did not '
            f'finish. {_what_to_do(local)}.')
    if kind == 'safetensors':
        return CheckpointFile(local, config, _load_safetensors(local))
    if kind == 'torch':
        return CheckpointFile(local, config, _load_torch(local, map_location))
    raise CheckpointError(
        f'checkpoint {local!r} is not a checkpoint: it is {kind} ({osp.getsize(local)} bytes), '
        f'not a PyTorch (.pth, .bin) or safetensors file. {_what_to_do(local)}.')


#: Parameter names that give away other well-known models.
_OTHER_MODELS = (
    ('relative_position_bias_table', 'a Swin Transformer'),
    ('layer1.0.conv1.weight', 'a ResNet'),
    ('cls_token', 'a ViT'),
    ('stages.0.', 'a ConvNeXt-like network'),
)


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

