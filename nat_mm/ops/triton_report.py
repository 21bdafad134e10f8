"""What the Triton backend's kernels cost on NVIDIA GPUs, measured without a GPU.

Each kernel that :mod:`.triton_na` launches is compiled offline for a GPU
architecture (``triton.compile`` with a ``GPUTarget``: the whole pipeline to a
cubin, no driver needed) with the arguments and launch meta-parameters the
backend itself would pass, specialised as Triton's JIT specialises them
(integers equal to 1 become constants, 16-divisible integers and 16-aligned
pointers get divisibility hints). Registers and spill bytes come from the
``ptxas -v`` log that Triton prints with ``TRITON_DUMP_PTXAS_LOG=1`` (Triton
3.9 runs ``ptxas-blackwell`` for sm_90), shared memory from the compiled
kernel's metadata; blocks per SM follow from the architecture's register file
and shared memory (:func:`blocks_per_sm`).

The kernels must be real JIT functions: the process must not run Triton's
interpreter (``TRITON_INTERPRET=1`` before triton was imported).
"""
import contextlib
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass

import torch

from . import triton_na


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
    if triton_na.triton is None:
        raise ReportError('triton does not import: pip install triton')
    if triton_na._interpreted():
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
    for ``kernel[grid](*args, **meta)``."""
    from triton._C.libtriton import native_specialize_impl
    params = kernel.arg_names
    values = list(args) + [meta[name] for name in params[len(args):]]
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, value) in enumerate(zip(params, values)):
        if i >= len(args):
            kind, key = 'constexpr', None
        else:
            kind, key = native_specialize_impl(backend, value, False, True, True)[:2]
        signature[name] = kind
        if kind == 'constexpr':
            constexprs[(i,)] = value
        elif isinstance(key, str):
            attrs[(i,)] = backend.parse_attr(key)
    options = {name: value for name, value in meta.items() if name not in params}
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
    """{kernel name: (kernel, args, meta)} of one forward + backward call on a
    GPU: q, k, v cut from one (B, H, W, 3, heads, head_dim) projection as
    :class:`~nat_mm.NeighborhoodAttention2D` makes them, a size x size map,
    the GPU's :class:`~.triton_na.LaunchPlan`. The tensors live on the CPU:
    only their dtypes, strides and alignment matter."""
    shape = (batch, heads, size, size, head_dim)
    qkv = torch.zeros(batch, size, size, 3, heads, head_dim, dtype=dtype)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    bias = torch.zeros(heads, 2 * kernel_size - 1, 2 * kernel_size - 1, dtype=dtype)
    bias = bias if rpb else None
    plan = triton_na.LaunchPlan(shape, dtype, kernel_size, dilation, gpu=True)
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
