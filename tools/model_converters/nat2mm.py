"""Convert an official NAT / DiNAT checkpoint into a backbone checkpoint for nat_mm.

Usage:
    python tools/model_converters/nat2mm.py checkpoints/nat_tiny.pth \
        checkpoints/nat_tiny_backbone.pth --arch tiny
    # the ImageNet-22k DiNAT-L weights (kernel 7) for the kernel-11 Mask2Former backbone
    python tools/model_converters/nat2mm.py checkpoints/dinat_large_in22k_224.pth \
        checkpoints/dinat_large_k11_backbone.pth --arch large --kernel-size 11

SRC may be a published classification checkpoint (raw state dict, or wrapped in
'model' / 'state_dict', with optional 'module.' / 'backbone.' prefixes). DST is
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

from nat_mm.models import NAT
from nat_mm.models.presets import ARCH_SETTINGS
from nat_mm.models.weight_conversion import (check_state_dict, convert_checkpoint,
                                             load_checkpoint_file, summarize_keys)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official NAT checkpoint (e.g. checkpoints/nat_tiny.pth)')
    parser.add_argument('dst', help='output backbone checkpoint')
    parser.add_argument('--arch', default='tiny', choices=sorted(ARCH_SETTINGS),
                        help="NAT / DiNAT variant the checkpoint belongs to ('large': DiNAT-L; "
                             'default: tiny)')
    parser.add_argument('--kernel-size', type=int, default=7,
                        help='kernel size of the target model; rpb tables are resized '
                             'bicubically when it differs from the checkpoint (default: 7)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model = NAT(arch=args.arch, kernel_size=args.kernel_size)
    try:
        raw = load_checkpoint_file(args.src)
        state_dict, dropped = convert_checkpoint(raw, model)
        missing, _ = check_state_dict(state_dict, model, source=f'checkpoint {args.src!r}')
    except (FileNotFoundError, TypeError, ValueError) as exc:
        sys.exit(f'nat2mm: error: {exc}')
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    meta = dict(arch=args.arch, kernel_size=args.kernel_size, source=osp.basename(args.src))
    torch.save({'state_dict': state_dict, 'meta': meta}, args.dst)
    num_params = sum(value.numel() for value in state_dict.values())
    print(f'{args.src} -> {args.dst}: {len(state_dict)} backbone tensors '
          f'({num_params / 1e6:.2f}M parameters) for NAT-{args.arch}, kernel {args.kernel_size}\n'
          f'  dropped {len(dropped)}: {summarize_keys(dropped)}\n'
          f'  initialised by the model: {summarize_keys(missing)}')


if __name__ == '__main__':
    main()
