"""Stage 1 of the checkpoint pipeline: read a checkpoint file, Hub folder or URL.

:func:`read_checkpoint` accepts what ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``
may name: an official ``.pth`` file (or any PyTorch checkpoint), a Hugging Face Hub
snapshot folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``),
one of those two files alone, or a URL (read by MMEngine). The file's format is
sniffed once from its first bytes (:func:`sniff_format`): PyTorch files are read by
MMEngine's loader, i.e. ``torch.load`` with torch's weights-only unpickler
(:mod:`nat_mm.utils` allow-lists what MMEngine training checkpoints need);
safetensors files by the ``safetensors`` package.

Every problem with the file itself is a :class:`~.messages.CheckpointError`: a missing
path (:class:`~.messages.CheckpointNotFoundError`, also a ``FileNotFoundError``), an
empty or truncated file, a file that is not a checkpoint (an image, a web page, text),
a folder without weights, an unreadable ``config.json``.

:func:`checkpoint_damage` is the same sniffer for the training checkpoints a resumed
run loads (:mod:`nat_mm.launch`): it reads a ``torch.save`` archive's directory, not
its tensors.
"""
import json
import os.path as osp
import zipfile
from collections import namedtuple

from ..presets import HOW_TO_GET_CHECKPOINTS, checkpoint_for_file
from .messages import (DOWNLOAD_COMMAND, CheckpointError, CheckpointNotFoundError, first_line,
                       how_to_replace)

#: Weight files of a Transformers (Hub) snapshot, in the order they are looked for.
HUB_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
#: The settings file of a Transformers (Hub) snapshot.
HUB_CONFIG_FILE = 'config.json'

#: (weights file, config.json as a dict or None, the object loaded from the weights file).
CheckpointFile = namedtuple('CheckpointFile', ['path', 'config', 'checkpoint'])

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


def checkpoint_damage(path):
    """Why the file at ``path`` is not a complete ``torch.save`` checkpoint, or None.

    torch.save writes a zip archive (torch >= 1.6) whose directory is at its
    end: a file cut short (its writer killed) has none. The format is sniffed
    (:func:`sniff_format`), then only the directory is read, not the tensors.

    Returns:
        str starting with 'it ' (to follow "checkpoint PATH is damaged: "), or None.
    """
    kind = sniff_format(path)
    if kind == 'empty':
        return 'it is empty (0 bytes)'
    names = None
    if kind == 'torch':
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            names = None
    if names is None:
        return (f'it is not a complete checkpoint ({osp.getsize(path)} bytes without the zip '
                'directory torch.save writes at the end): it was cut short, e.g. the run was '
                'killed while writing it, or it is another kind of file')
    if not any(name.split('/')[-1] == 'data.pkl' for name in names):
        return 'it is a zip archive without data.pkl, not a checkpoint saved by torch.save'
    return None


def _load_safetensors(path):
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointError(
            f'checkpoint {path!r} is a damaged or incomplete safetensors file '
            f'({osp.getsize(path)} bytes; {first_line(exc)}). {how_to_replace(path)}.') from exc


def _load_torch(path, map_location):
    # Imported here: mmengine.runner imports OpenCV, which the backbone needs nowhere else.
    from mmengine.runner import CheckpointLoader
    try:
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ...
        if 'weights only' in str(exc).lower():
            raise CheckpointError(
                f'checkpoint {path!r} holds Python objects that torch\'s safe weights-only '
                f'loader refuses ({first_line(exc)}). nat_mm loads weights only: save the '
                "state dict alone (torch.save(model.state_dict(), ...))") from exc
        raise CheckpointError(
            f'checkpoint {path!r} is damaged or incomplete: torch.load cannot read its '
            f'{osp.getsize(path)} bytes ({first_line(exc)}). {how_to_replace(path)}.') from exc


def _read_config(path):
    try:
        with open(path, encoding='utf-8') as file:
            config = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f'{path!r} is not a readable Transformers config ({first_line(exc)}): restore it '
            'from the Hub repository, or remove it to load the weights without the '
            'config check') from exc
    if not isinstance(config, dict):
        raise CheckpointError(f'{path!r} is not a Transformers config (not a JSON object)')
    return config


def _weights_and_config(path):
    """(weights file, its config.json path or None) that a local checkpoint path stands for.

    A folder stands for its Hub weights file; a file named ``model.safetensors`` or
    ``pytorch_model.bin`` has the ``config.json`` beside it, when there is one.
    """
    local = osp.expanduser(str(path))
    if osp.isdir(local):
        found = [osp.join(local, name) for name in HUB_WEIGHT_FILES
                 if osp.isfile(osp.join(local, name))]
        if not found:
            raise CheckpointError(
                f'checkpoint folder {str(path)!r} has neither {" nor ".join(HUB_WEIGHT_FILES)}: '
                'give a Hugging Face Hub snapshot folder (config.json + model.safetensors or '
                f'pytorch_model.bin) or a checkpoint file. {HOW_TO_GET_CHECKPOINTS}.')
        local = found[0]
    config_path = osp.join(osp.dirname(local), HUB_CONFIG_FILE)
    is_hub_file = osp.basename(local) in HUB_WEIGHT_FILES and osp.isfile(config_path)
    return local, config_path if is_hub_file else None


def read_hub_config(path):
    """The Transformers ``config.json`` (dict) that goes with a checkpoint path, or None.

    A Hub snapshot folder's, or the one beside a file named ``model.safetensors``
    or ``pytorch_model.bin``; None for a URL.
    """
    if '://' in str(path):
        return None
    _, config_path = _weights_and_config(path)
    return None if config_path is None else _read_config(config_path)


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
    local, config_path = _weights_and_config(path)
    if not osp.isfile(local):
        name, entry = checkpoint_for_file(osp.basename(local))
        this_one = (f'It is the published checkpoint {name!r}: "{DOWNLOAD_COMMAND} {name}" '
                    f'fetches it (official address {entry["url"]}). ' if name else '')
        raise CheckpointNotFoundError(
            f'NAT pretrained checkpoint {path!r} not found. {this_one}{HOW_TO_GET_CHECKPOINTS}.')
    config = None if config_path is None else _read_config(config_path)
    kind = sniff_format(local)
    if kind == 'empty':
        raise CheckpointError(
            f'checkpoint {local!r} is empty (0 bytes): a download or copy that did not '
            f'finish. {how_to_replace(local)}.')
    if kind == 'safetensors':
        return CheckpointFile(local, config, _load_safetensors(local))
    if kind == 'torch':
        return CheckpointFile(local, config, _load_torch(local, map_location))
    raise CheckpointError(
        f'checkpoint {local!r} is not a checkpoint: it is {kind} ({osp.getsize(local)} bytes), '
        f'not a PyTorch (.pth, .bin) or safetensors file. {how_to_replace(local)}.')
