"""What the checkpoint pipeline says: its errors, the commands they name, key summaries.

Every problem a stage finds is a :class:`CheckpointError` whose message names the
file, what is wrong and what to do. The commands a message names are console
entry points that ``pip install nat_mm`` installs (:mod:`nat_mm.cli`).
"""
import os.path as osp

from ..presets import DOWNLOAD_COMMAND, checkpoint_for_file

#: Converts a checkpoint into a backbone checkpoint (:mod:`nat_mm.cli.convert`).
CONVERT_COMMAND = 'nat-mm-convert'


class CheckpointError(ValueError):
    """A pretrained checkpoint nat_mm cannot load.

    The message names the file, what is wrong with it and what to do.
    """


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The pretrained checkpoint path does not exist."""


def how_to_replace(path):
    """How to replace a damaged file (str): its download command when it is a published one.

    Args:
        path: the damaged file; only its base name is compared with the published files.
    """
    name, entry = checkpoint_for_file(osp.basename(path))
    if name:
        return (f'Download it again: "{DOWNLOAD_COMMAND} {name} --force" (checks the size; or '
                f'by hand from {entry["url"]})')
    return (f'Download it again, or point init_cfg at an intact copy ("{DOWNLOAD_COMMAND} '
            '--list" lists the published checkpoints)')


def first_line(exc):
    """``'TypeName: first line of the message'`` of an exception (str)."""
    text = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {text[0] if text else ""}'.rstrip(': ')


def summarize_keys(keys, limit=6):
    """Compact description of state-dict keys, grouped by module.

    ``['norm0.weight', 'norm0.bias', 'norm1.weight']`` -> ``'norm0.{weight,bias}, norm1.weight'``.

    Args:
        keys: list of str.
        limit: the number of modules named before the rest is counted.

    Returns:
        str; ``'none'`` for no keys.
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
