"""Benchmark NATTEN's API on nat_mm (nat_mm.natten_compat): split form against fused, and
against an installed NATTEN.

Prints, measured in one run with interleaved repeats (medians, by
:mod:`nat_mm.utils.profiling`), the time of a forward (no grad) and of a
forward+backward of

- ``split``: what Transformers' NAT / DiNAT and NATTEN <= 0.17 modules run:
  ``natten2dav(softmax(natten2dqkrpb(q * scale, k, rpb)), v)`` (heads first);
- ``fused``: NATTEN 0.17's ``na2d(q, k, v, rpb=rpb)`` (heads last), i.e. :func:`nat_mm.na2d`;
- with ``--natten``, the NATTEN installed in this environment, on the same
  inputs: its split functions (NATTEN <= 0.17) or its ``na2d`` without rpb
  (NATTEN 0.20+, whose CPU path is FlexAttention: forward only); a mode it
  cannot run is reported as such.

Examples::

    python tools/analysis_tools/benchmark_natten_compat.py
    python tools/analysis_tools/benchmark_natten_compat.py --natten --repeats 1 \\
        --cases 'B2 h2 128x128 K7'
"""
import argparse

import torch

from nat_mm.cli.options import add_measurement_options, check_measurement_options
from nat_mm.natten_compat import v0_17
from nat_mm.utils.profiling import attention_inputs, device_name, interleaved_medians, timer_name

MODES = ('fwd', 'fwd+bwd')

# name: (batch, heads, height, width, head_dim, kernel, dilation)
CASES = {
    'B2 h2 128x128 K7': (2, 2, 128, 128, 32, 7, 1),
    'B2 h2 128x128 K7 d4': (2, 2, 128, 128, 32, 7, 4),
    'B2 h8 32x32 K7': (2, 8, 32, 32, 32, 7, 1),
}


def split_form(functional):
    """NATTEN's split form, with ``functional`` holding natten2dqkrpb / natten2dav."""
    def run(q, k, v, rpb, kernel, dilation):
        logits = functional.natten2dqkrpb(q * q.shape[-1] ** -0.5, k, rpb, kernel, dilation)
        return functional.natten2dav(logits.softmax(-1), v, kernel, dilation)
    return run


def fused_form(na2d, with_rpb=True):
    """NATTEN's fused ``na2d`` (heads last), given heads-first inputs."""
    def run(q, k, v, rpb, kernel, dilation):
        q, k, v = (t.permute(0, 2, 3, 1, 4) for t in (q, k, v))
        extra = dict(rpb=rpb) if with_rpb else {}
        return na2d(q, k, v, kernel, dilation=dilation, **extra).permute(0, 3, 1, 2, 4)
    return run


def implementations(with_natten=False):
    """{name: function(q, k, v, rpb, kernel, dilation) -> out}."""
    impls = {'split': split_form(v0_17), 'fused': fused_form(v0_17.na2d)}
    if with_natten:
        import natten
        import natten.functional
        name = f'NATTEN {natten.__version__}'
        if hasattr(natten.functional, 'na2d_qk'):      # <= 0.17: split operators, with rpb
            impls[f'{name} split'] = split_form(_NattenSplitNames(natten.functional))
        else:                                          # 0.20+: fused only, no rpb
            impls[f'{name} na2d (no rpb)'] = fused_form(natten.na2d, with_rpb=False)
    return impls


class _NattenSplitNames:
    """NATTEN 0.17's split functions under the 0.14 names the split form calls."""

    def __init__(self, functional):
        self.functional = functional

    def natten2dqkrpb(self, q, k, rpb, kernel, dilation):
        return self.functional.na2d_qk(q, k, kernel, dilation, rpb=rpb)

    def natten2dav(self, attn, v, kernel, dilation):
        return self.functional.na2d_av(attn, v, kernel, dilation)


def runnable(fn, inputs, kernel, dilation, backward):
    """A zero-argument call of one forward (no grad) or forward + backward, or the
    error message when ``fn`` cannot run that mode."""
    detached = [t.detach() for t in inputs]     # inference: no input requires grad

    def call():
        if not backward:
            with torch.no_grad():
                return fn(*detached, kernel, dilation)
        fn(*inputs, kernel, dilation).sum().backward()
        for t in inputs:
            t.grad = None
    try:
        call()
    except (NotImplementedError, RuntimeError) as err:
        return f'{type(err).__name__}: {str(err).splitlines()[0][:80]}'
    return call


def measure_case(case, device, dtype, repeats, impls):
    """{(impl, mode): seconds or the reason it cannot run}."""
    inputs = attention_inputs(*CASES[case][:6], device, dtype)
    kernel, dilation = CASES[case][5:]
    calls = {(name, mode): runnable(fn, inputs, kernel, dilation, mode == 'fwd+bwd')
             for name, fn in impls.items() for mode in MODES}
    results = {key: call for key, call in calls.items() if isinstance(call, str)}
    results.update(interleaved_medians({key: call for key, call in calls.items()
                                        if not isinstance(call, str)}, repeats, device,
                                       warmup=0))
    return results


def benchmark(cases, device, dtype, repeats, with_natten=False, emit=print):
    """Measures ``cases``; emits a header, then per case one line per implementation
    (seconds per mode and the ratio to ``fused``); returns {case: measure_case result}."""
    device = torch.device(device)
    impls = implementations(with_natten)
    emit(f'{str(dtype).replace("torch.", "")}, {device_name(device)}, torch {torch.__version__}; '
         f'median of {repeats} ({timer_name(device)}), after one call of each')
    emit(f'{"case":22s} {"implementation":28s} | {"fwd":>9s} {"x fused":>8s} | '
         f'{"fwd+bwd":>9s} {"x fused":>8s}')
    results = {}
    for case in cases:
        results[case] = measure_case(case, device, dtype, repeats, impls)
        for name in impls:
            cells = []
            for mode in MODES:
                got = results[case][(name, mode)]
                if isinstance(got, str):
                    cells.append(f'{"-":>9s} {"-":>8s}   ({got})')
                else:
                    cells.append(f'{got:8.3f}s {got / results[case][("fused", mode)]:7.2f}x')
            emit(f'{case:22s} {name:28s} | ' + ' | '.join(cells))
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_measurement_options(parser, repeats=5)
    parser.add_argument('--cases', nargs='*', default=list(CASES), choices=list(CASES),
                        metavar='CASE', help='subset of: ' + ', '.join(repr(c) for c in CASES))
    parser.add_argument('--natten', action='store_true',
                        help='also time the NATTEN installed here (import natten)')
    args = parser.parse_args(argv)
    check_measurement_options(parser, args)
    return args


def main(argv=None):
    args = parse_args(argv)
    benchmark(args.cases, args.device, getattr(torch, args.dtype), args.repeats, args.natten,
              emit=lambda line: print(line, flush=True))


if __name__ == '__main__':
    main()
