"""Peak memory of one NAT / DiNAT backbone training step, with and without activation
checkpointing (``with_cp``).

Each setting runs in a fresh subprocess (peak resident set size is per process): build the
backbone in train mode, one warm-up step, then one measured step (forward + backward of the
sum of all outputs) whose peak memory is reported, measured by
:func:`nat_mm.utils.profiling.peak_memory` (CPU: peak RSS growth; CUDA:
``torch.cuda.max_memory_allocated`` beyond what the step started with).

Default: the Mask2Former DiNAT-L backbone (kernel 11, the 'm2f' dilations, drop path 0.3)
at 1024x1024, batch 1::

    python dev/measure_backbone_memory.py
    python dev/measure_backbone_memory.py --arch tiny --kernel-size 7 --dilations none \
        --shape 512 512

A memory measurement of docs/model_zoo.md (``with_cp``), kept out of tools/: it builds the
backbone alone, not a config's model.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import torch

from nat_mm import NAT
from nat_mm.utils.profiling import FRESH_PROCESS_ENV, peak_memory


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='large')
    parser.add_argument('--kernel-size', type=int, default=11)
    parser.add_argument('--dilations', default='m2f', help="a preset name or 'none'")
    parser.add_argument('--drop-path', type=float, default=0.3)
    parser.add_argument('--shape', type=int, nargs=2, default=(1024, 1024), metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--probe', choices=['cp', 'no_cp'], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def probe(args):
    """Build, warm up and measure one setting in this process; print JSON."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = NAT(arch=args.arch, kernel_size=args.kernel_size,
                dilations=None if args.dilations == 'none' else args.dilations,
                drop_path_rate=args.drop_path, with_cp=args.probe == 'cp').to(device)
    inputs = torch.randn(args.batch, 3, *args.shape, device=device)

    def step():
        sum(out.sum() for out in model(inputs)).backward()
        model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    step()                                                      # warm-up
    peak = peak_memory(step, device)
    print(json.dumps(dict(peak_bytes=peak, seconds=time.perf_counter() - start,
                          params=sum(p.numel() for p in model.parameters()))))


def main(argv=None):
    args = parse_args(argv)
    if args.probe:
        return probe(args)
    env = dict(os.environ, **FRESH_PROCESS_ENV)
    print(f'NAT arch={args.arch} kernel={args.kernel_size} dilations={args.dilations} '
          f'input ({args.batch}, 3, {args.shape[0]}, {args.shape[1]}), {args.device}, float32, '
          f'{torch.get_num_threads()} threads; peak memory of one training step '
          f'(forward + backward) after a warm-up step')
    for setting in ('no_cp', 'cp'):
        command = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                   '--probe', setting]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode:
            sys.exit(f'measure_backbone_memory: {setting} failed:\n{result.stderr[-3000:]}')
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"  with_cp={setting == 'cp'!s:5}  peak {measured['peak_bytes'] / 2 ** 30:6.2f} GiB"
              f"  ({measured['params'] / 1e6:.1f}M params; warm-up + step "
              f"{measured['seconds']:.0f} s)")


if __name__ == '__main__':
    main()
