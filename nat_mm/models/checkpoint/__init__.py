"""Loading NAT / DiNAT checkpoints: one pipeline, each stage in one module, walked once per load.

1. :mod:`.read`: read a file, a Hugging Face Hub folder or a URL; the format is sniffed
   once (:func:`sniff_format`; :func:`checkpoint_damage` is the same sniffer for the
   training checkpoints a resumed run loads).
2. :mod:`.names`: nat_mm's names; the layout (official, MMEngine-wrapped, Transformers)
   is decided once and the classifier's final norm and head are split off once.
3. :mod:`.checks`: the checkpoint against the model (``config.json``, rpb resizing,
   width, variant, missing and unexpected keys; a classifier's head).
4. :mod:`.load` (the backbone: :func:`load_pretrained`, used by ``NAT.init_weights``) and
   :mod:`.classifier` (whole MMPretrain classifiers, head included; imported on its own,
   since it imports the backbone class).

The published ImageNet checkpoints are the official classifiers' raw state dicts: the
backbone's keys plus the final ``norm`` and ``head`` (whatever its number of classes:
1000, or 21841 for the ImageNet-22k DiNAT-L). Their Hugging Face Hub copies
(``shi-labs/nat-*``, ``shi-labs/dinat-*``) are in Transformers' layout, with a
``config.json`` that is checked against the model.
"""
from .checks import check_config, check_state_dict, resize_rpb
from .load import checkpoint_filter_fn, convert_checkpoint, load_pretrained, prepare_state_dict
from .messages import CheckpointError, CheckpointNotFoundError, summarize_keys
from .names import detect_layout, from_transformers_layout, to_nat_names
from .read import (CheckpointFile, checkpoint_damage, nat_arguments, read_checkpoint,
                   read_hub_config, sniff_format)

__all__ = ['CheckpointError', 'CheckpointFile', 'CheckpointNotFoundError', 'check_config',
           'check_state_dict', 'checkpoint_damage', 'checkpoint_filter_fn', 'convert_checkpoint',
           'detect_layout', 'from_transformers_layout', 'load_pretrained',
           'nat_arguments', 'prepare_state_dict', 'read_checkpoint', 'read_hub_config',
           'resize_rpb', 'sniff_format', 'summarize_keys', 'to_nat_names']
