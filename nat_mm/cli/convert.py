"""Convert an official or Hugging Face Hub NAT / DiNAT checkpoint into a backbone checkpoint.

Usage (``nat-mm-convert``, installed with nat_mm; or ``python -m nat_mm.cli.convert``):
    nat-mm-convert checkpoints/nat_tiny.pth checkpoints/nat_tiny_backbone.pth --arch tiny
    # the ImageNet-22k DiNAT-L weights (kernel 7) for the kernel-11 Mask2Former backbone
    nat-mm-convert checkpoints/dinat_large_in22k_224.pth \
        checkpoints/dinat_large_k11_backbone.pth --arch large --kernel-size 11
    # a Hub snapshot (Transformers' layout) to the official layout; the model is built
    # from its config.json when --arch is not given
    nat-mm-convert path/to/dinat-large-11x11-in22k-in1k-384 \
        checkpoints/dinat_large_in22k_in1k_384_11x11.pth

SRC may be a published classification checkpoint (raw state dict, or wrapped in
'model' / 'state_dict', with optional 'module.' / 'backbone.' prefixes), or a
Hugging Face Hub snapshot folder of shi-labs/nat-* / shi-labs/dinat-* (config.json +
model.safetensors or pytorch_model.bin) or one of its weight files. DST is
written as ``{'state_dict': <backbone tensors, unprefixed>, 'meta': {...}}``
without the classification ``head``/``norm`` (1000 or, for the ImageNet-22k
DiNAT-L, 21841 classes); the output norms ``norm{i}`` are
not in it (the model initialises them). Load it with
``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=DST)``.
The conversion is checked against NAT(arch): a checkpoint of another variant
is refused with the mismatching keys (or widths). DiNAT dilations add no
parameters: convert DiNAT weights with the arch of the same size.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from ..models import NAT
from ..models.checkpoint import (CheckpointError, nat_arguments, prepare_state_dict,
                                 read_hub_config, summarize_keys)
from ..models.checkpoint.messages import CONVERT_COMMAND
from ..models.presets import ARCH_SETTINGS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=CONVERT_COMMAND,
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official NAT checkpoint (e.g. checkpoints/nat_tiny.pth)')
    parser.add_argument('dst', help='output backbone checkpoint')
    parser.add_argument('--arch', choices=sorted(ARCH_SETTINGS),
                        help="NAT / DiNAT variant the checkpoint belongs to ('large': DiNAT-L); "
                             "default: the one SRC's config.json describes (Hub snapshots), "
                             'else tiny')
    parser.add_argument('--kernel-size', type=int,
                        help='kernel size of the target model; rpb tables are resized '
                             'bicubically when it differs from the checkpoint (default: '
                             "config.json's, else 7)")
    return parser.parse_args(argv)


def main(argv=None):
    """``nat-mm-convert``: write the backbone checkpoint; exits with the error's message
    when the checkpoint cannot be converted."""
    args = parse_args(argv)
    try:
        config = None if args.arch else read_hub_config(args.src)
        arguments = nat_arguments(config) if config else dict(arch=args.arch or 'tiny')
        if args.kernel_size:
            arguments['kernel_size'] = args.kernel_size
        arguments.setdefault('kernel_size', 7)
        model = NAT(**arguments)
        state_dict, dropped, missing, _ = prepare_state_dict(args.src, model)
    except (CheckpointError, TypeError) as exc:
        sys.exit(f'{CONVERT_COMMAND}: error: {exc}')
    arch = args.arch or arguments['arch']
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    meta = dict(arch=arch, kernel_size=arguments['kernel_size'], source=osp.basename(args.src))
    torch.save({'state_dict': state_dict, 'meta': meta}, args.dst)
    num_params = sum(value.numel() for value in state_dict.values())
    print(f'{args.src} -> {args.dst}: {len(state_dict)} backbone tensors '
          f'({num_params / 1e6:.2f}M parameters) for NAT arch {arch}, kernel '
          f'{arguments["kernel_size"]}\n'
          f'  dropped {len(dropped)}: {summarize_keys(dropped)}\n'
          f'  initialised by the model: {summarize_keys(missing)}')


if __name__ == '__main__':
    main()
