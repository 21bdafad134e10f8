"""Peak extra memory of one neighbourhood-attention inference call, per backend.

Runs in this process one ``na2d`` call (no grad) of the given backend on random
(1, heads, H, W, head_dim) inputs after a small warm-up call, and prints the peak
resident-set growth (:func:`nat_mm.utils.profiling.peak_memory`). Run it once per
backend, each in a fresh process, as the README's numbers were:

    for b in export csr reference; do python tools/deploy/na_memory.py $b; done

Default: NAT-T's first stage at 800x1344 (200x336 map, 2 heads, head_dim 32, kernel 7).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from nat_mm.ops import na2d, na2d_reference  # noqa: E402
from nat_mm.utils.profiling import peak_memory  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('backend', help="a na2d backend ('export', 'csr', ...) or 'reference'")
    parser.add_argument('--map', type=int, nargs=2, default=(200, 336), metavar=('H', 'W'))
    parser.add_argument('--heads', type=int, default=2)
    parser.add_argument('--head-dim', type=int, default=32)
    parser.add_argument('--kernel-size', type=int, default=7)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    query = torch.randn(1, args.heads, *args.map, args.head_dim)
    key, value = torch.randn_like(query), torch.randn_like(query)
    k = args.kernel_size
    rpb = torch.randn(args.heads, 2 * k - 1, 2 * k - 1)
    small = torch.randn(1, args.heads, 2 * k, 2 * k, args.head_dim)
    if args.backend == 'reference':
        def call(*tensors):
            return na2d_reference(*tensors, k, 1, rpb)
    else:
        def call(*tensors):
            return na2d(*tensors, k, 1, rpb, backend=args.backend)
    with torch.no_grad():
        call(small, small, small)                       # warm-up: allocator, kernels
        peak = peak_memory(lambda: call(query, key, value))
    print(f'{args.backend}: {peak / 2 ** 20:.0f} MB peak extra RSS, map '
          f'{args.map[0]}x{args.map[1]}, {args.heads} heads, head_dim {args.head_dim}, kernel {k}')


if __name__ == '__main__':
    main()
