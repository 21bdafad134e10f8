"""Benchmark nat_mm's neighbourhood attention against the gather reference.

Prints, side by side and measured in one run, forward time, forward+backward
time and peak extra memory of the fast path (``nat_mm.na2d``) and of the
legacy gather implementation (``nat_mm.na2d_reference``), and their ratios.

Times are medians of interleaved repeats. Peak memory is measured for one
forward+backward: on CUDA with ``torch.cuda.max_memory_allocated``; on CPU as
the growth of the peak resident set size (VmHWM) of a fresh subprocess (each
(case, implementation) pair runs alone in its own process; Linux).

Examples::

    python tools/benchmark_na.py
    python tools/benchmark_na.py --device cuda --dtype bfloat16
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nat_mm.ops import na2d, na2d_reference  # noqa: E402

IMPLEMENTATIONS = {'fast': na2d, 'reference': na2d_reference}

# name: (batch, heads, height, width, head_dim, kernel, dilation)
CASES = {
    'stage1@512 (B2 h2 128x128)': (2, 2, 128, 128, 32, 7, 1),
    'stage1@800x1333 (B1 h2 200x336)': (1, 2, 200, 336, 32, 7, 1),
    'stage3@512 (B2 h8 32x32)': (2, 8, 32, 32, 32, 7, 1),
    'dilated d4 (B2 h2 128x128)': (2, 2, 128, 128, 32, 7, 4),
}


def make_inputs(case, device, dtype, seed=0):
    batch, heads, height, width, head_dim, kernel, _ = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, height, width, head_dim, generator=gen)
               .to(device, dtype).requires_grad_() for _ in range(3))
    rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen) * 0.02
    return q, k, v, rpb.to(device).requires_grad_()


def run_once(impl, case, inputs, backward):
    _, _, _, _, _, kernel, dilation = CASES[case]
    q, k, v, rpb = inputs
    if not backward:
        with torch.no_grad():
            return IMPLEMENTATIONS[impl](q, k, v, kernel, dilation, rpb)
    out = IMPLEMENTATIONS[impl](q, k, v, kernel, dilation, rpb)
    out.backward(torch.ones_like(out))
    for t in (q, k, v, rpb):
        t.grad = None
    return None


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_cases(case, device, dtype, repeats, impls):
    """Median seconds per implementation for forward and forward+backward."""
    inputs = make_inputs(case, device, dtype)
    times = {(impl, mode): [] for impl in impls for mode in ('fwd', 'fwd+bwd')}
    for impl in impls:                         # warm-up (caches, allocator, kernels)
        run_once(impl, case, inputs, backward=True)
    for _ in range(repeats):
        for impl in impls:
            for mode in ('fwd', 'fwd+bwd'):
                synchronize(device)
                start = time.perf_counter()
                run_once(impl, case, inputs, backward=mode == 'fwd+bwd')
                synchronize(device)
                times[(impl, mode)].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def peak_memory_here(impl, case, device, dtype):
    """Peak bytes allocated by one forward+backward, beyond the inputs."""
    inputs = make_inputs(case, device, dtype)
    if device.type == 'cuda':
        run_once(impl, case, inputs, backward=True)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run_once(impl, case, inputs, backward=True)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    base = reset_peak_rss()
    run_once(impl, case, inputs, backward=True)
    return peak_rss() - base


def _proc_status_bytes(field):
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def reset_peak_rss():
    """Resets this process's peak RSS (VmHWM) to the current RSS; returns it.

    ``ru_maxrss`` is no use here: Linux carries it across fork + exec, so a
    child of a big process starts with its parent's peak.
    """
    with open('/proc/self/clear_refs', 'w') as clear_refs:
        clear_refs.write('5')
    return _proc_status_bytes('VmRSS')


def peak_rss():
    return _proc_status_bytes('VmHWM')


def peak_memory(impl, case, device, dtype):
    if device.type == 'cuda':
        return peak_memory_here(impl, case, device, dtype)
    probe = [sys.executable, __file__, '--memory-probe', json.dumps([impl, case]),
             '--dtype', str(dtype).replace('torch.', '')]
    return int(subprocess.run(probe, check=True, capture_output=True, text=True)
               .stdout.strip().splitlines()[-1])


def count_kernels(device):
    """--count-kernels: ATen ops dispatched plus Triton launches per
    forward+backward for each backend of ``device`` at NAT-T's stage-1 shape
    (256x256 input, batch 1), then per training step (backbone forward +
    backward of sum(mean of each output)) of NAT-T under each backend and of
    Swin-T (mmseg's SwinTransformer, if importable) on the same input. On
    CPU the Triton backend runs through Triton's interpreter (the script
    re-runs itself with TRITON_INTERPRET=1; slow: ~5 CPU minutes); its count
    depends neither on the batch nor on the map size. Each step is counted
    on its second run (the Triton backend's on its first)."""
    import os
    if device.type == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1':
        env = dict(os.environ, TRITON_INTERPRET='1')
        sys.exit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)
    from torch.utils._python_dispatch import TorchDispatchMode

    from nat_mm import NAT
    from nat_mm.ops import available_backends, na_backend, triton_na

    class AtenCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    def count(step, warm_up=True):
        if warm_up:                  # the CSR path builds its plans on a first call
            step()
        launches = triton_na.launch_count()
        with AtenCounter() as counter:
            step()
        return counter.ops, triton_na.launch_count() - launches

    def na_step(q, k, v, rpb):
        out = na2d(q, k, v, 7, 1, rpb)
        out.backward(torch.ones_like(out))

    def backbone_step(model, image):
        sum(feature.mean() for feature in model(image)).backward()

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 64, 32, generator=gen).to(device).requires_grad_()
               for _ in range(3))
    rpb = (torch.randn(2, 13, 13, generator=gen) * 0.02).to(device).requires_grad_()
    image = torch.randn(1, 3, 256, 256, generator=gen).to(device)
    print('| what (fwd+bwd) | ATen ops | Triton launches | total |\n|---|---|---|---|')

    def row(name, step, backend=None):
        # Triton keeps nothing between calls that dispatches ATen ops (its
        # compile cache is not ATen): no warm-up, which costs minutes under
        # the interpreter
        ops, launches = count(step, warm_up=backend != 'triton')
        print(f'| {name} | {ops:,} | {launches} | {ops + launches:,} |', flush=True)

    for backend in available_backends(device):
        with na_backend(backend):
            row(f'na2d, {backend}, NAT-T stage 1 at 256x256 (B1 h2 64x64 D32 K7)',
                lambda: na_step(q, k, v, rpb), backend)
    nat = NAT('tiny').to(device)
    for backend in available_backends(device):
        with na_backend(backend):
            row(f'NAT-T training step, 256x256 batch 1, {backend}',
                lambda: backbone_step(nat, image), backend)
    try:
        from mmseg.models.backbones import SwinTransformer
    except ImportError as err:
        print(f'Swin-T skipped: mmseg is not importable ({err})')
    else:
        swin = SwinTransformer().to(device)
        row('Swin-T (mmseg) training step, 256x256 batch 1', lambda: backbone_step(swin, image))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16', 'float16'])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--cases', nargs='*', default=list(CASES),
                        help='subset of: ' + ', '.join(repr(c) for c in CASES))
    parser.add_argument('--count-kernels', action='store_true',
                        help='count ATen ops and Triton launches per fwd+bwd and training step')
    parser.add_argument('--memory-probe', help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = parse_args()
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    if args.count_kernels:
        count_kernels(device)
        return
    if args.memory_probe:
        impl, case = json.loads(args.memory_probe)
        print(peak_memory_here(impl, case, device, dtype))
        return
    for case in args.cases:
        if case not in CASES:
            sys.exit(f'unknown case {case!r}; choose from {list(CASES)}')
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'CPU, {torch.get_num_threads()} threads'
    print(f'neighbourhood attention, kernel 7, head_dim 32, {args.dtype}, {name}, '
          f'torch {torch.__version__}; times: median of {args.repeats}; memory: peak extra '
          'of one fwd+bwd')
    header = (f'{"case":34s} | {"fwd ref":>8s} {"fwd fast":>8s} {"speedup":>7s} | '
              f'{"f+b ref":>8s} {"f+b fast":>8s} {"speedup":>7s} | '
              f'{"mem ref":>9s} {"mem fast":>9s} {"ratio":>6s}')
    print(header)
    print('-' * len(header))
    for case in args.cases:
        times = time_cases(case, device, dtype, args.repeats, list(IMPLEMENTATIONS))
        mem = {impl: peak_memory(impl, case, device, dtype) for impl in IMPLEMENTATIONS}
        fwd = times[('reference', 'fwd')], times[('fast', 'fwd')]
        both = times[('reference', 'fwd+bwd')], times[('fast', 'fwd+bwd')]
        print(f'{case:34s} | {fwd[0]:7.3f}s {fwd[1]:7.3f}s {fwd[0] / fwd[1]:6.2f}x | '
              f'{both[0]:7.3f}s {both[1]:7.3f}s {both[0] / both[1]:6.2f}x | '
              f'{mem["reference"] / 2**20:7.0f}MB {mem["fast"] / 2**20:7.0f}MB '
              f'{mem["fast"] / max(mem["reference"], 1):6.3f}', flush=True)


if __name__ == '__main__':
    main()
