"""Registers, spills, shared memory and occupancy of the Triton backend's kernels
on NVIDIA GPUs, compiled on this machine: no GPU, no driver.

Compiles the forward, dQ and dK/dV kernels with the launch parameters the
backend chooses for every combination of the options, prints a table, and with
``--json FILE`` writes one record per compile. Run it without
``TRITON_INTERPRET=1`` (the kernels must be real JIT functions). Each compile
takes seconds: the full default grid is long; narrow it with the options.

    python tools/analysis_tools/kernel_report.py --dtype bf16 --kernel-size 7 \\
        --head-dim 32 --rpb yes --dropout no --arch 80 90

``--triton-versions 3.6.0 3.7.1 3.9.0`` runs the same report once per Triton
version, each in a virtual environment under ``--venv-root`` (created on
first use: this interpreter's packages, torch and nat_mm included, plus that
Triton from the package registry).

How: each kernel that :mod:`nat_mm.ops.triton_na` launches is compiled offline for a GPU
architecture (``triton.compile`` with a ``GPUTarget``: the whole pipeline to a
cubin, no driver needed) with the arguments and launch meta-parameters the
backend itself would pass, specialised as Triton's JIT specialises them
(integers equal to 1 become constants, 16-divisible integers and 16-aligned
pointers get divisibility hints). Registers and spill bytes come from the
``ptxas -v`` log that Triton prints with ``TRITON_DUMP_PTXAS_LOG=1`` (Triton
3.9 runs ``ptxas-blackwell`` for sm_90), shared memory from the compiled
kernel's metadata; blocks per SM follow from the architecture's register file
and shared memory (:func:`blocks_per_sm`).
"""
import argparse
import contextlib
import io
import json
import os
import re
import site
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from nat_mm.ops import triton_na

YES_NO = {'yes': True, 'no': False}


@dataclass(frozen=True)
class Arch:
    """Per-SM limits of one compute capability (CUDA C++ Programming Guide,
    technical specifications per compute capability)."""
    name: str
    max_warps: int          # resident warps per SM
    max_blocks: int         # resident blocks per SM
    smem_per_sm: int        # bytes of shared memory per SM (largest carve-out)
    smem_per_block: int     # bytes one block may opt in to
    registers: int = 65536  # 32-bit registers per SM
    reg_unit: int = 256     # registers are allocated per warp in units of this
    smem_reserved: int = 1024   # bytes the system reserves per resident block
    smem_unit: int = 128        # shared memory allocation granularity


ARCHS = {
    80: Arch('sm_80 (A100)', 64, 32, 167936, 166912),
    86: Arch('sm_86 (RTX 30xx, A10)', 48, 16, 102400, 101376),
    89: Arch('sm_89 (RTX 40xx, L4, L40)', 48, 24, 102400, 101376),
    90: Arch('sm_90 (H100, H200)', 64, 32, 233472, 232448),
}

DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}

#: The kernels of one forward + backward call, in launch order.
KERNELS = ('fwd', 'dq', 'dkv')

#: JSON keys of one record, in order.
KEYS = ('kernel', 'arch', 'dtype', 'kernel_size', 'head_dim', 'rpb', 'dropout', 'num_warps',
        'registers', 'spill_bytes', 'shared_bytes', 'blocks_per_sm')


class ReportError(RuntimeError):
    """One row (or the whole report) cannot be produced; the message says why."""


def blocks_per_sm(arch, registers, shared_bytes, num_warps):
    """Resident blocks per SM of a kernel on ``arch`` (an :data:`ARCHS` key).

    Registers are allocated per warp (``registers * 32`` rounded up to the
    allocation unit) from four equal partitions of the register file, one per
    warp scheduler; shared memory per block is the kernel's plus the system's
    reservation, rounded up to the allocation unit.
    """
    spec = ARCHS[arch]
    per_warp = -(-registers * 32 // spec.reg_unit) * spec.reg_unit
    warps_by_regs = (spec.registers // 4 // per_warp) * 4
    smem = -(-(shared_bytes + spec.smem_reserved) // spec.smem_unit) * spec.smem_unit
    return min(spec.max_blocks, spec.max_warps // num_warps, warps_by_regs // num_warps,
               spec.smem_per_sm // smem)


def _nvidia_backend():
    """Triton's CUDA backend class, or ReportError."""
    if triton_na.TRITON_UNUSABLE is not None:
        raise ReportError(f'the kernels cannot compile here: {triton_na.TRITON_UNUSABLE} '
                          '(pip install triton)')
    if triton_na.interpreted():
        raise ReportError('the kernels run in Triton\'s interpreter (TRITON_INTERPRET=1): '
                          'run the report without it')
    try:
        from triton.backends.nvidia.compiler import CUDABackend
    except ImportError as err:
        raise ReportError(f'triton {triton_na.triton.__version__} has no NVIDIA backend '
                          f'({err}): install the Linux x86_64/aarch64 wheel from PyPI') from err
    return CUDABackend


def _specialise(backend, kernel, args, meta):
    """(signature, constexprs, attrs, options) as Triton's JIT derives them
    for ``kernel[grid](**args, **meta)``."""
    from triton._C.libtriton import native_specialize_impl
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in args:
            kind, key = native_specialize_impl(backend, args[name], False, True, True)[:2]
        else:
            kind, key = 'constexpr', None
        signature[name] = kind
        if kind == 'constexpr':
            constexprs[(i,)] = args[name] if name in args else meta[name]
        elif isinstance(key, str):
            attrs[(i,)] = backend.parse_attr(key)
    options = {name: value for name, value in meta.items() if name not in kernel.arg_names}
    return signature, constexprs, attrs, options


_LOG_NUMBERS = {
    'registers': re.compile(r'Used (\d+) registers'),
    'spill_bytes': re.compile(r'(\d+) bytes spill stores'),
}


def compile_kernel(kernel, args, meta, arch):
    """Compiles one launch for sm_``arch``.

    Returns:
        dict with registers, spill_bytes (spill stores), shared_bytes and
        num_warps.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    backend = _nvidia_backend()
    signature, constexprs, attrs, options = _specialise(backend, kernel, args, meta)
    source = ASTSource(kernel, signature, constexprs, attrs)
    log = io.StringIO()
    env = {'TRITON_DUMP_PTXAS_LOG': '1'}
    with tempfile.TemporaryDirectory() as cache, _environ(env, TRITON_CACHE_DIR=cache), \
            contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='TRITON_DEFAULT_FP_FUSION')
        compiled = triton.compile(source, target=GPUTarget('cuda', arch, 32), options=options)
    text = log.getvalue()
    found = {key: pattern.search(text) for key, pattern in _LOG_NUMBERS.items()}
    missing = [key for key, match in found.items() if match is None]
    if missing:
        raise ReportError(f'{kernel.__name__} sm_{arch}: no {", ".join(missing)} in the '
                          f'ptxas log ({text.strip()[:200]!r})')
    return dict(registers=int(found['registers'].group(1)),
                spill_bytes=int(found['spill_bytes'].group(1)),
                shared_bytes=int(compiled.metadata.shared),
                num_warps=int(compiled.metadata.num_warps))


@contextlib.contextmanager
def _environ(*mappings, **values):
    """Sets environment variables for the block, then restores them."""
    values = dict(*mappings, **values)
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def launches(dtype, kernel_size, head_dim, rpb, dropout, batch=2, heads=4, size=56,
             dilation=1):
    """{kernel name: :class:`~nat_mm.ops.triton_na.Launch`} of one forward + backward
    call on a GPU: q, k, v cut from one (B, H, W, 3, heads, head_dim) projection as
    :class:`~nat_mm.NeighborhoodAttention2D` makes them, a size x size map,
    the GPU's :class:`~nat_mm.ops.triton_na.LaunchPlan`. The tensors live on the CPU:
    only their dtypes, strides and alignment matter."""
    shape = (batch, heads, size, size, head_dim)
    qkv = torch.zeros(batch, size, size, 3, heads, head_dim, dtype=dtype)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    bias = torch.zeros(heads, 2 * kernel_size - 1, 2 * kernel_size - 1, dtype=dtype)
    bias = bias if rpb else None
    plan = triton_na.LaunchPlan(shape, dtype, kernel_size, dilation, dropout, gpu=True)
    out, dout, dq, dk, dv = (torch.zeros(shape, dtype=dtype) for _ in range(5))
    lse, delta = (torch.zeros(batch * heads, size * size) for _ in range(2))
    slots = (torch.zeros(batch * heads, plan.grid[0], plan.block_r, plan.block_r)
             if rpb else None)
    seed, p = (12345, 0.1) if dropout else (0, 0.0)
    scale = head_dim ** -0.5
    fwd = triton_na.forward_launch(q, k, v, bias, out, lse, plan, kernel_size, dilation,
                                   scale, p, seed)
    dq_launch, dkv_launch = triton_na.backward_launches(
        q, k, v, bias, out, dout, lse, delta, dq, dk, dv, slots, plan, kernel_size, dilation,
        scale, p, seed)
    return {'fwd': fwd, 'dq': dq_launch, 'dkv': dkv_launch}


def report(archs, dtypes, kernel_sizes, head_dims, rpbs, dropouts, on_error=print, jobs=1,
           kernels=KERNELS):
    """Compiles every kernel for every combination; yields one record (a dict
    with :data:`KEYS`) per compile, in a fixed order. A row that cannot be
    produced (unknown arch, failed compile) is reported as one line through
    ``on_error`` and skipped; ReportError if nothing can compile (no NVIDIA
    backend, the interpreter). ``jobs`` > 1 compiles in that many processes;
    ``kernels``: a subset of :data:`KERNELS`."""
    _nvidia_backend()
    known = []
    for arch in archs:
        if arch in ARCHS:
            known.append(arch)
        else:
            on_error(f'unknown arch {arch}: known are {" ".join(map(str, ARCHS))}')
    tasks = [(dict(dtype=dtype, kernel_size=k, head_dim=d, rpb=rpb, dropout=dropout), name, arch)
             for dtype in dtypes for k in kernel_sizes for d in head_dims for rpb in rpbs
             for dropout in dropouts for name in kernels for arch in known]
    if jobs > 1:
        import multiprocessing
        pool = multiprocessing.get_context('fork').Pool(jobs)
        rows = pool.imap(_row, tasks)
    else:
        pool, rows = None, map(_row, tasks)
    try:
        for row in rows:
            if isinstance(row, str):
                on_error(row)
            else:
                yield row
    finally:
        if pool is not None:
            pool.terminate()


def _row(task):
    """The record of one (config, kernel, arch), or the line saying why not."""
    config, name, arch = task
    kernel, args, meta = launches(DTYPES[config['dtype']], config['kernel_size'],
                                  config['head_dim'], config['rpb'], config['dropout'])[name]
    try:
        usage = compile_kernel(kernel, args, meta, arch)
    except Exception as err:   # one failed row must not stop the report
        lines = str(err).strip().splitlines() or ['']
        return (f'{name} sm_{arch} {_describe(config)}: does not compile: '
                f'{type(err).__name__}: {lines[0]}')
    record = dict(kernel=name, arch=arch, **config, **usage)
    record['blocks_per_sm'] = blocks_per_sm(arch, usage['registers'], usage['shared_bytes'],
                                            usage['num_warps'])
    return {key: record[key] for key in KEYS}


def _describe(config):
    return (f"{config['dtype']} K{config['kernel_size']} D{config['head_dim']}"
            f"{' rpb' if config['rpb'] else ''}{' dropout' if config['dropout'] else ''}")


def format_table(records):
    """The records as a Markdown table (with warps per SM)."""
    lines = ['| kernel | arch | dtype | K | head_dim | rpb | dropout | warps | registers '
             '| spill B | shared B | blocks/SM | warps/SM |',
             '|' + '---|' * 13]
    for r in records:
        lines.append(
            f"| {r['kernel']} | sm_{r['arch']} | {r['dtype']} | {r['kernel_size']} "
            f"| {r['head_dim']} | {'yes' if r['rpb'] else 'no'} "
            f"| {'yes' if r['dropout'] else 'no'} | {r['num_warps']} | {r['registers']} "
            f"| {r['spill_bytes']} | {r['shared_bytes']} | {r['blocks_per_sm']} "
            f"| {r['blocks_per_sm'] * r['num_warps']} |")
    return '\n'.join(lines)


def format_summary(records):
    """The records' worst case per (kernel, arch, dtype, head_dim, dropout)
    over kernel sizes and rpb, as a Markdown table: most registers, most
    spill bytes, most shared memory, fewest blocks per SM."""
    groups = {}
    for r in records:
        key = (r['kernel'], r['arch'], r['dtype'], r['head_dim'], r['dropout'])
        groups.setdefault(key, []).append(r)
    lines = ['| kernel | arch | dtype | head_dim | dropout | K | rpb | warps | max registers '
             '| max spill B | max shared B | min blocks/SM |',
             '|' + '---|' * 12]
    for (kernel, arch, dtype, head_dim, dropout), rows in groups.items():
        ks = sorted({r['kernel_size'] for r in rows})
        rpb = '/'.join(sorted({'yes' if r['rpb'] else 'no' for r in rows}, reverse=True))
        warps = '/'.join(str(w) for w in sorted({r['num_warps'] for r in rows}))
        lines.append(
            f"| {kernel} | sm_{arch} | {dtype} | {head_dim} | {'yes' if dropout else 'no'} "
            f"| {','.join(map(str, ks))} | {rpb} | {warps} "
            f"| {max(r['registers'] for r in rows)} | {max(r['spill_bytes'] for r in rows)} "
            f"| {max(r['shared_bytes'] for r in rows)} "
            f"| {min(r['blocks_per_sm'] for r in rows)} |")
    return '\n'.join(lines)


def shared_fits(record):
    """Whether the record's shared memory fits one block on its arch."""
    return record['shared_bytes'] <= ARCHS[record['arch']].smem_per_block


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--kernel', nargs='+', choices=KERNELS,
                        default=list(KERNELS),
                        help='forward, dQ and dK/dV kernels')
    parser.add_argument('--arch', type=int, nargs='+', default=[80, 86, 89, 90],
                        help='compute capabilities, e.g. 80 (A100) 90 (H100)')
    parser.add_argument('--dtype', nargs='+', choices=list(DTYPES),
                        default=list(DTYPES))
    parser.add_argument('--kernel-size', type=int, nargs='+', default=[3, 5, 7, 9, 11, 13])
    parser.add_argument('--head-dim', type=int, nargs='+', default=[16, 32, 64, 128])
    parser.add_argument('--rpb', nargs='+', choices=list(YES_NO), default=['yes', 'no'])
    parser.add_argument('--dropout', nargs='+', choices=list(YES_NO), default=['no', 'yes'])
    parser.add_argument('--json', metavar='FILE', help='write the records here')
    parser.add_argument('--jobs', type=int, default=1, help='compiles run in this many processes')
    parser.add_argument('--summary', action='store_true',
                        help='print the worst case per kernel, arch, dtype, head_dim, dropout '
                             '(over K and rpb) instead of every row')
    parser.add_argument('--triton-versions', nargs='+', metavar='VERSION',
                        help='run the report once per Triton version, each in its own venv')
    parser.add_argument('--venv-root', default=str(Path.home() / '.cache' / 'nat_mm_triton_venvs'),
                        help='where the --triton-versions environments live')
    args = parser.parse_args(argv)
    for k in args.kernel_size:
        if k < 3 or k % 2 == 0 or k > 13:
            parser.error(f'--kernel-size {k}: the kernels take odd K from 3 to 13')
    return args


def _say(line):
    print(f'kernel_report: {line}', file=sys.stderr, flush=True)


def run_report(args):
    """The report in this interpreter: (records, exit status)."""
    import triton
    try:
        records = []
        for record in report(
                args.arch, args.dtype, args.kernel_size, args.head_dim,
                [YES_NO[x] for x in args.rpb], [YES_NO[x] for x in args.dropout], on_error=_say,
                jobs=args.jobs, kernels=args.kernel):
            records.append(record)
            _say(f"{record['kernel']} sm_{record['arch']} {record['dtype']} "
                 f"K{record['kernel_size']} D{record['head_dim']}: {record['registers']} "
                 f"registers, {record['spill_bytes']} B spilled")
    except ReportError as err:
        _say(str(err))
        return [], 1
    print(f'\ntriton {triton.__version__}\n')
    print((format_summary if args.summary else format_table)(
        records))
    return records, 0 if records else 1


def _venv(root, version):
    """Python of the venv for Triton ``version`` (created when missing), or
    None after one line saying why it cannot be made."""
    path = Path(root) / f'triton-{version}'
    python = path / 'bin' / 'python'
    marker = path / '.triton-installed'
    if marker.exists():
        return python
    steps = [[sys.executable, '-m', 'venv', str(path)],
             [str(python), '-m', 'pip', 'install', '--quiet', '--no-deps',
              f'triton=={version}']]
    for i, step in enumerate(steps):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ['(no output)']
            _say(f'triton {version}: cannot install ({lines[-1]})')
            return None
        if i == 0:   # this interpreter's packages (torch, nat_mm) after the venv's own
            purelib = subprocess.run([str(python), '-c', 'import sysconfig; print('
                                      'sysconfig.get_paths()["purelib"])'],
                                     capture_output=True, text=True, check=True).stdout.strip()
            lines = [f'import site; site.addsitedir({p!r})' for p in site.getsitepackages()]
            Path(purelib, 'nat_mm_base.pth').write_text('\n'.join(lines) + '\n')
    marker.touch()
    return python


def run_matrix(args, argv):
    """--triton-versions: one report per version; the JSON maps version -> records."""
    passed = [a for a in _strip_option(argv, '--triton-versions') if a]
    passed = _strip_option(passed, '--json')
    results, status = {}, 0
    for version in args.triton_versions:
        python = _venv(args.venv_root, version)
        if python is None:
            status = 1
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, 'records.json')
            done = subprocess.run([str(python), __file__, *passed, '--json', out])
            if done.returncode != 0 or not os.path.exists(out):
                _say(f'triton {version}: the report failed (exit status {done.returncode})')
                status = 1
                continue
            results[version] = json.loads(Path(out).read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return status if results else 1


def _strip_option(argv, name):
    """argv without ``name`` and the values that follow it."""
    out, skipping = [], False
    for arg in argv:
        if arg.startswith('--'):
            skipping = arg == name or arg.startswith(name + '=')
            if skipping:
                continue
        if not skipping:
            out.append(arg)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.triton_versions:
        return run_matrix(args, argv)
    records, status = run_report(args)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return status


if __name__ == '__main__':
    sys.exit(main())
