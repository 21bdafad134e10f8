"""Command-line options every tool of a kind spells the same way.

- :func:`add_config_options`: ``--cfg-options`` (MMEngine's ``key=value``);
- :func:`add_launcher_options` / :func:`parse_launcher_args`: ``--launcher``
  and the ``--local-rank`` that ``torch.distributed.launch`` passes;
- :func:`add_measurement_options` / :func:`check_measurement_options`: device,
  dtype, repeats and where CPU memory is measured (the benchmark tools).
"""
import argparse
import os

import torch
from mmengine.config import DictAction

LAUNCHERS = ('none', 'pytorch', 'slurm')


def add_config_options(parser, example='train_dataloader.dataset.data_root=/data/ade'):
    """Adds ``--cfg-options KEY=VALUE ...`` (a dict in ``args.cfg_options``)."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help=f'override config entries, e.g. {example}')


def add_launcher_options(parser):
    """Adds ``--launcher`` and ``--local-rank`` (alias ``--local_rank``, as older
    ``torch.distributed.launch`` spells it)."""
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def parse_launcher_args(parser, argv=None):
    """``parser.parse_args(argv)``, with ``LOCAL_RANK`` set from ``--local-rank``
    when the launcher did not set it (MMEngine reads the variable)."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def add_measurement_options(parser, repeats):
    """Adds ``--device``, ``--dtype``, ``--repeats`` (default ``repeats``),
    ``--memory-in-process`` and the hidden ``--memory-probe`` (the fresh process's
    job: a JSON argument list)."""
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16', 'float16'])
    parser.add_argument('--repeats', type=int, default=repeats, help='timed repeats (median)')
    parser.add_argument('--memory-in-process', action='store_true',
                        help='CPU: measure peak memory in this process instead of a fresh '
                        'one per measurement (quicker, less exact)')
    parser.add_argument('--memory-probe', help=argparse.SUPPRESS)


def check_measurement_options(parser, args):
    """Stops (``parser.error``) on a repeat count below 1 or ``--device cuda``
    without CUDA."""
    if args.repeats < 1:
        parser.error('--repeats must be >= 1')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available (torch '
                     f'{torch.__version__}); run on a GPU machine or use --device cpu')
