"""Benchmark nat_mm's neighbourhood attention against the gather reference.

Prints, side by side and measured in one run, the time and the peak extra
memory of a forward (no grad, as in inference) and of a forward+backward, of
the fast path (``nat_mm.na2d``, the device's default backend or ``--backend``)
and of the legacy gather implementation (``nat_mm.na2d_reference``), and their
ratios.

Times are medians of interleaved repeats and peak memory is that of one call
after a warm-up one, both measured by :mod:`nat_mm.utils.profiling` (CUDA
events and ``max_memory_allocated`` on CUDA; on CPU ``time.perf_counter`` and
the growth of the peak resident set size of a fresh subprocess per (case,
implementation, mode), Linux; ``--memory-in-process``: in this process,
quicker but less exact).

Examples::

    python tools/analysis_tools/benchmark_na.py
    python tools/analysis_tools/benchmark_na.py --device cuda --dtype bfloat16
    python tools/analysis_tools/benchmark_na.py --device cuda --dtype bfloat16 --backend csr
    # inference memory of the export backend at NAT-T's stage 1 at 800x1333
    python tools/analysis_tools/benchmark_na.py --backend export \
        --cases 'stage1@800x1333 (B1 h2 200x336)'
"""
import argparse
import json
import subprocess
import sys

import torch

from nat_mm.cli.options import add_measurement_options, check_measurement_options
from nat_mm.ops import available_backends, na2d, na2d_reference, na_backend
from nat_mm.ops.backends import DEFAULT_ORDER
from nat_mm.utils.profiling import (attention_inputs, device_name, interleaved_medians,
                                    peak_memory_in_fresh_process, timer_name)
from nat_mm.utils.profiling import peak_memory as measure_peak

IMPLEMENTATIONS = {'fast': na2d, 'reference': na2d_reference}
MODES = ('fwd', 'fwd+bwd')

# name: (batch, heads, height, width, head_dim, kernel, dilation)
CASES = {
    'stage1@512 (B2 h2 128x128)': (2, 2, 128, 128, 32, 7, 1),
    'stage1@800x1333 (B1 h2 200x336)': (1, 2, 200, 336, 32, 7, 1),
    'stage3@512 (B2 h8 32x32)': (2, 8, 32, 32, 32, 7, 1),
    'dilated d4 (B2 h2 128x128)': (2, 2, 128, 128, 32, 7, 4),
}


def make_inputs(case, device, dtype, seed=0):
    """q, k, v: (B, heads, H, W, head_dim) and rpb (heads, 2K-1, 2K-1), all in ``dtype``
    (a model cast to ``dtype``; the reference needs one dtype), on ``device``, requiring grad."""
    return attention_inputs(*CASES[case][:6], device, dtype, seed)


def run_once(impl, case, inputs, backward):
    """One forward (no_grad) or one forward + backward of ``impl`` on ``inputs``."""
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


def time_case(case, device, dtype, repeats, impls=tuple(IMPLEMENTATIONS)):
    """{(impl, mode): median seconds} for mode in ``MODES``, after one warm-up
    call of each (caches, allocator, kernels)."""
    inputs = make_inputs(case, device, dtype)

    def call(impl, mode):
        return lambda: run_once(impl, case, inputs, backward=mode == 'fwd+bwd')
    return interleaved_medians({(impl, mode): call(impl, mode) for impl in impls
                                for mode in MODES}, repeats, device)


def peak_memory_here(impl, case, device, dtype, mode='fwd+bwd'):
    """Peak bytes of one call (``mode``: 'fwd' without grad, or 'fwd+bwd') in this
    process, beyond the inputs, after a warm-up call."""
    inputs = make_inputs(case, device, dtype)
    backward = mode == 'fwd+bwd'
    run_once(impl, case, inputs, backward)
    return measure_peak(lambda: run_once(impl, case, inputs, backward), device)


def peak_memory(impl, case, device, dtype, fresh_process=True, backend=None, mode='fwd+bwd'):
    """Peak extra bytes of one call (see :func:`peak_memory_here`): in this process on
    CUDA; on CPU in a fresh subprocess (peak RSS is per process), or with
    ``fresh_process=False`` in this one (quicker; memory freed earlier in this process may
    be reused unseen)."""
    if device.type == 'cuda' or not fresh_process:
        return peak_memory_here(impl, case, device, dtype, mode)
    return peak_memory_in_fresh_process(
        [__file__, '--memory-probe', json.dumps([impl, case, mode]),
         '--dtype', str(dtype).replace('torch.', '')] + (['--backend', backend] if backend
                                                         else []))


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
        # the first-use self-check's probe would be counted in the Triton rows (which
        # run without a warm-up under the interpreter)
        env = dict(os.environ, TRITON_INTERPRET='1', NAT_MM_SELF_CHECK='0')
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
        # compile cache is not ATen): no warm-up under the interpreter, where it
        # costs minutes; on a GPU the warm-up also runs the first-use self-check
        ops, launches = count(step, warm_up=backend != 'triton' or device.type == 'cuda')
        print(f'| {name} | {ops:,} | {launches} | {ops + launches:,} |', flush=True)

    # flex has no backward on the CPU
    backends = [name for name in available_backends(device)
                if not (name == 'flex' and device.type == 'cpu')]
    for backend in backends:
        with na_backend(backend):
            row(f'na2d, {backend}, NAT-T stage 1 at 256x256 (B1 h2 64x64 D32 K7)',
                lambda: na_step(q, k, v, rpb), backend)
    nat = NAT('tiny').to(device)
    for backend in backends:
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


def measure_case(case, device, dtype, repeats, fresh_process=True, backend=None):
    """{'time': {(impl, mode): s}, 'memory': {(impl, mode): bytes}} of one case, the fast
    path with ``backend`` (None: the device's default)."""
    with na_backend(backend):
        return dict(time=time_case(case, device, dtype, repeats),
                    memory={(impl, mode): peak_memory(impl, case, device, dtype, fresh_process,
                                                      backend, mode)
                            for impl in IMPLEMENTATIONS for mode in MODES})


def default_backend(device):
    """The backend na2d uses on ``device`` when none is chosen."""
    return DEFAULT_ORDER.get(device.type, DEFAULT_ORDER['*'])[0]


def table_header(device, dtype, repeats, fresh_process=True, backend=None):
    """The title line, the column header and the rule of the table."""
    where = ''
    if device.type != 'cuda':
        where = f' (peak RSS, {"fresh" if fresh_process else "this"} process)'
    title = (f'neighbourhood attention, kernel 7, head_dim 32, {str(dtype).replace("torch.", "")}, '
             f'{device_name(device)}, torch {torch.__version__}; fast = backend '
             f'{backend or default_backend(device) + " (default)"}; times: median of {repeats} '
             f'({timer_name(device)}); memory: peak extra of one call{where}')
    header = (f'{"case":34s} | {"fwd ref":>8s} {"fwd fast":>8s} {"speedup":>7s} | '
              f'{"f+b ref":>8s} {"f+b fast":>8s} {"speedup":>7s} | '
              f'{"fwd mem ref":>11s} {"fast":>9s} {"ratio":>6s} | '
              f'{"f+b mem ref":>11s} {"fast":>9s} {"ratio":>6s}')
    return [title, header, '-' * len(header)]


def table_row(case, result):
    """One line of the table from ``measure_case``'s result."""
    times, mem = result['time'], result['memory']
    fwd = times[('reference', 'fwd')], times[('fast', 'fwd')]
    both = times[('reference', 'fwd+bwd')], times[('fast', 'fwd+bwd')]
    memory = ' | '.join(
        f'{mem[("reference", mode)] / 2**20:9.0f}MB {mem[("fast", mode)] / 2**20:7.0f}MB '
        f'{mem[("fast", mode)] / max(mem[("reference", mode)], 1):6.3f}' for mode in MODES)
    return (f'{case:34s} | {fwd[0]:7.3f}s {fwd[1]:7.3f}s {fwd[0] / fwd[1]:6.2f}x | '
            f'{both[0]:7.3f}s {both[1]:7.3f}s {both[0] / both[1]:6.2f}x | {memory}')


def benchmark(cases, device, dtype, repeats, emit=print, fresh_process=True, backend=None):
    """Measures ``cases`` and passes each line of the table to ``emit`` as soon as
    it is known; returns {case: measure_case result}. ``fresh_process``: see
    ``peak_memory``; ``backend``: of the fast path, None for the device's default."""
    device = torch.device(device)
    for line in table_header(device, dtype, repeats, fresh_process, backend):
        emit(line)
    results = {}
    for case in cases:
        results[case] = measure_case(case, device, dtype, repeats, fresh_process, backend)
        emit(table_row(case, results[case]))
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_measurement_options(parser, repeats=5)
    parser.add_argument('--cases', nargs='*', default=list(CASES),
                        help='subset of: ' + ', '.join(repr(c) for c in CASES))
    parser.add_argument('--count-kernels', action='store_true',
                        help='count ATen ops and Triton launches per fwd+bwd and training step')
    parser.add_argument('--backend', help="the fast path's na2d backend (default: the "
                        "device's first; see nat_mm.ops.available_backends)")
    args = parser.parse_args(argv)
    check_measurement_options(parser, args)
    unknown = [case for case in args.cases if case not in CASES]
    if unknown:
        parser.error(f'unknown case(s) {unknown}; choose from {list(CASES)}')
    if args.backend and args.backend not in available_backends(args.device):
        parser.error(f'--backend {args.backend}: not available on {args.device}; choose from '
                     f'{list(available_backends(args.device))}')
    return args


def main(argv=None):
    args = parse_args(argv)
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    if args.count_kernels:
        count_kernels(device)
        return
    if args.memory_probe:
        impl, case, mode = json.loads(args.memory_probe)
        with na_backend(args.backend):
            print(peak_memory_here(impl, case, device, dtype, mode))
        return
    benchmark(args.cases, device, dtype, args.repeats, emit=lambda line: print(line, flush=True),
              fresh_process=not args.memory_in_process, backend=args.backend)


if __name__ == '__main__':
    main()
