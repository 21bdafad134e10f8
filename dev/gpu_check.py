"""One command for a fresh GPU machine: does nat_mm work there, and how fast is it.

Meant to run once, in at most 8 minutes, on a machine that has torch with CUDA but maybe
nothing else of the stack. It writes one report, ``OUT/gpu_check.md`` (and the same data as
``OUT/gpu_check.json``), section by section as each is done, so a run cut short still leaves
what it measured. Sections, in this order:

1. environment: Python, torch, CUDA, cuDNN, Triton, mmengine versions, GPU name, free memory,
   nat_mm's backends for the device;
2. op tests: every backend of ``nat_mm.ops.available_backends('cuda')`` against
   ``nat_mm.ops.reference.na2d_reference`` (float64, same inputs) in float32, bfloat16,
   float16 and under autocast (bfloat16, float16), outputs and the gradients of q, k, v and
   rpb, at small shapes and at the stage-1 shapes of NAT at 512x512 and 800x1344; NaN-free
   outputs and gradients at large logits in float16 and bfloat16;
3. backbone: NAT-T and DiNAT-T forward + backward at 512x512, batch 2, under bfloat16
   autocast, against the same models in float32 on the CPU (outputs and gradients);
4. benchmarks: the backends against each other (triton, flex, csr: time of the forward and
   of forward + backward, and the output's error, at every stage of NAT-T and DiNAT-T at
   512x512, batch 2, in float16 and bfloat16: which one wins where), then
   ``tools/analysis_tools/benchmark_na.py --device cuda --dtype bfloat16`` and
   ``tools/analysis_tools/benchmark_backbone.py --device cuda --dtype bfloat16 --shapes
   512x512:2 800x1344:2`` (NAT-T vs Swin-T vs the attention-free floor, CUDA events,
   ``max_memory_allocated``, with the GPU targets), run as commands, their tables copied;
5. demo (only where mmcv with ops, mmdet and mmseg import, e.g. a user's GPU box): a few
   UperNet and Mask R-CNN demo iterations with AMP through ``tools/demo.py``.

Every section says what it skipped and why. The exit status is 0 when every check that ran
passed, 1 otherwise.

On the benchmark GPU machine (repo root; torch, timm, numpy there, no mmengine, no network),
after ``bash dev/prepare_gpu_run.sh`` filled ``.whl/`` here (carry ``.whl``)::

    PYTHONUNBUFFERED=1 pip install -q --no-index --no-deps --target .pydeps .whl/*.whl \
        && PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.pydeps:$PWD python dev/gpu_check.py --out $OUT

On a GPU box with the stack installed by ``scripts/setup_env.sh``::

    .venv/bin/python dev/gpu_check.py --out work_dirs/gpu_check

Without a GPU, ``--dry-run`` runs the CPU-capable parts at small sizes (imports, the op
checks on CPU, the backbone comparison at 64x64, one-repeat benchmarks, the report); the
test suite runs it (tests/test_dev/test_gpu_check.py).
"""
import argparse
import contextlib
import copy
import functools
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / 'tools'

#: Default time budget (seconds): sections that would start later are skipped.
BUDGET_S = 480
#: DiNAT-T's dilations at 512x512: the preset of configs/upernet_dinat_tiny_ade20k.py.
DINAT_T_DILATIONS = 'seg'
REPORT_NAME = 'gpu_check'

#: Op check shapes: name -> (batch, heads, height, width, head_dim, kernel, dilation, packed).
#: ``packed``: q, k, v are the strided views of one (B, H, W, 3, heads, head_dim) tensor the
#: model's qkv projection gives; otherwise three contiguous tensors.
SMALL_CASES = {
    'small (B1 h2 16x19 d16 k7)': (1, 2, 16, 19, 16, 7, 1, False),
    'small dilated (B2 h3 20x23 d8 k5 dil3)': (2, 3, 20, 23, 8, 5, 3, False),
}
NAT_CASES = {
    'stage1@512 (B2 h2 128x128 d32)': (2, 2, 128, 128, 32, 7, 1, True),
    'stage1@800x1344 (B2 h2 200x336 d32)': (2, 2, 200, 336, 32, 7, 1, True),
    'DiNAT stage1@512 (B2 h2 128x128 d32 dil16)': (2, 2, 128, 128, 32, 7, 16, True),
}
#: Precision modes: name -> (q/k/v dtype, rpb dtype, autocast dtype or None, tolerance).
#: The autocast modes are what NeighborhoodAttention2D passes under autocast: q, k, v from
#: the autocast qkv projection, rpb a float32 parameter. The tolerance bounds
#: max|got - ref| / max|ref| for the output and each gradient, ref in float64 on the same
#: (rounded) inputs.
PRECISIONS = {
    'float32': (torch.float32, torch.float32, None, 1e-4),
    'bfloat16': (torch.bfloat16, torch.bfloat16, None, 4e-2),
    'float16': (torch.float16, torch.float16, None, 1e-2),
    'autocast bfloat16': (torch.bfloat16, torch.float32, torch.bfloat16, 4e-2),
    'autocast float16': (torch.float16, torch.float32, torch.float16, 1e-2),
}
#: q and k are scaled by this in the large-logit check: logits (head_dim 32) reach ~±300,
#: where exp() overflows float16 unless the softmax subtracts the row maximum.
LARGE_LOGIT_SCALE = 8.0
#: Backbone: relative L2 error bounds, bfloat16 autocast vs float32, outputs and gradients
#: (CPU bfloat16 autocast measured 1.6e-2 and 1.4e-2 for NAT-T at 64x64; a wrong operator
#: gives errors of order 1).
BACKBONE_TOL = dict(outputs=5e-2, grads=1e-1)
DEMO_TASKS = {  # task -> --cfg-options of tools/demo.py for a few iterations with AMP
    'seg': ['train_cfg.max_iters=20', 'train_cfg.val_interval=20',
            'default_hooks.checkpoint.interval=20', 'default_hooks.logger.interval=5',
            'optim_wrapper.type=AmpOptimWrapper'],
    'det': ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=5',
            'optim_wrapper.type=AmpOptimWrapper'],
}
SECTIONS = ('environment', 'ops', 'backbone', 'bench-op', 'bench-backbone', 'demo')
#: Backends that run only the forward on a device type: left out of the op checks there.
FORWARD_ONLY = {'cpu': ('flex',)}
#: The backend comparison's dtypes.
COMPARE_DTYPES = ('float16', 'bfloat16')


# --------------------------------------------------------------------------- report


class Section:
    """What one part of the check found: free text lines, checks, skips."""

    def __init__(self, title):
        self.title = title
        self.lines = []
        self.checks = []      # dict(name, passed, detail)
        self.skipped = []     # dict(what, why)
        self.error = None
        self.seconds = 0.0

    def line(self, text=''):
        print(f'  {text}' if text else '', flush=True)
        self.lines.append(text)

    def check(self, name, passed, detail=''):
        print(f'  {"PASS" if passed else "FAIL"}: {name}{": " + detail if detail else ""}',
              flush=True)
        self.checks.append(dict(name=name, passed=bool(passed), detail=detail))

    def skip(self, what, why):
        print(f'  SKIPPED: {what}: {why}', flush=True)
        self.skipped.append(dict(what=what, why=why))

    @property
    def status(self):
        if self.error or any(not c['passed'] for c in self.checks):
            return 'FAIL'
        if self.checks:
            return 'PASS'
        return 'SKIPPED' if self.skipped and not self.lines else 'INFO'

    def as_dict(self):
        return dict(title=self.title, status=self.status, seconds=round(self.seconds, 1),
                    lines=self.lines, checks=self.checks, skipped=self.skipped,
                    error=self.error)


class Report:
    """The sections so far, rewritten to OUT/gpu_check.{md,json} after each one."""

    def __init__(self, out_dir, argv, budget_s):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.argv = argv
        self.budget_s = budget_s
        self.start = time.monotonic()
        self.sections = []

    def elapsed(self):
        return time.monotonic() - self.start

    @contextlib.contextmanager
    def section(self, title):
        """Runs the body as one section; an exception fails the section (traceback kept)
        and the check goes on with the next one."""
        section = Section(title)
        print(f'\n== {title}', flush=True)
        begin = time.monotonic()
        try:
            yield section
        except Exception:  # noqa: BLE001 - one broken part must not lose the rest
            section.error = traceback.format_exc(limit=8)
            print(section.error, flush=True)
        section.seconds = time.monotonic() - begin
        self.sections.append(section)
        self.write()

    def skip_section(self, title, why):
        with self.section(title) as section:
            section.skip(title, why)

    @property
    def passed(self):
        return all(section.status != 'FAIL' for section in self.sections)

    def write(self):
        summary = dict(passed=self.passed, seconds=round(self.elapsed(), 1),
                       command=' '.join(['python', 'dev/gpu_check.py', *self.argv]))
        data = dict(summary=summary, sections=[s.as_dict() for s in self.sections])
        (self.out_dir / f'{REPORT_NAME}.json').write_text(json.dumps(data, indent=1))
        md = [f'# nat_mm GPU check: {"PASS" if self.passed else "FAIL"}', '',
              f'`{summary["command"]}`, {summary["seconds"]:.0f} s', '',
              '| section | status | seconds |', '|---|---|---|']
        md += [f'| {s.title} | {s.status} | {s.seconds:.1f} |' for s in self.sections]
        for section in self.sections:
            md += ['', f'## {section.title}: {section.status}', '']
            if section.lines:
                md += ['```', *section.lines, '```', '']
            md += [f'- {"PASS" if c["passed"] else "**FAIL**"}: {c["name"]}'
                   + (f' ({c["detail"]})' if c['detail'] else '') for c in section.checks]
            md += [f'- skipped: {s["what"]}: {s["why"]}' for s in section.skipped]
            if section.error:
                md += ['', '```', section.error.rstrip(), '```']
        (self.out_dir / f'{REPORT_NAME}.md').write_text('\n'.join(md) + '\n')


# --------------------------------------------------------------------------- environment


def opencv_line():
    """The report's cv2 line. ``import nat_mm`` does not need OpenCV (the benchmark GPU
    machine has none, and its 54 MB wheel would not fit the 64 MiB brought along); loading
    a checkpoint file (mmengine.runner) and the demo's stack (mmcv) do."""
    try:
        import cv2
    except ImportError as error:
        return (f'cv2: not installed ({error}); not needed by `import nat_mm` or these checks '
                '(checkpoint loading and the demo need it)')
    return f'cv2: {cv2.__version__}'


def package_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return 'not installed'


def backends_for(device_type):
    """nat_mm's backends that run forward and backward on ``device_type``."""
    from nat_mm.ops import available_backends
    return tuple(name for name in available_backends(device_type)
                 if name not in FORWARD_ONLY.get(device_type, ()))


def environment(section, device, cv2_line, backends):
    """Versions, hardware and nat_mm's backends (report lines only)."""
    section.line(f'python {platform.python_version()} ({sys.executable}), '
                 f'{platform.platform()}, {os.cpu_count()} CPUs, '
                 f'torch threads {torch.get_num_threads()}')
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    section.line(f'torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}')
    try:
        import triton
        section.line(f'triton {triton.__version__}')
    except ImportError as error:
        section.line(f'triton: does not import ({error})')
    import mmengine
    section.line(f'mmengine {mmengine.__version__} ({Path(mmengine.__file__).parent})')
    section.line(cv2_line)
    section.line('; '.join(f'{name} {package_version(name)}'
                           for name in ('numpy', 'timm', 'mmcv', 'mmdet', 'mmsegmentation')))
    import nat_mm
    section.line(f'nat_mm {nat_mm.__version__} ({Path(nat_mm.__file__).parent}), '
                 f'git {git_commit()}')
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        section.line(f'GPU: {props.name}, compute capability {props.major}.{props.minor}, '
                     f'{props.multi_processor_count} SMs, {torch.cuda.device_count()} visible; '
                     f'memory {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB')
        section.line(f'driver: {nvidia_smi_driver()}')
        section.line(f'TF32 matmul allowed: {torch.backends.cuda.matmul.allow_tf32}')
    else:
        section.line('GPU: none (dry run: checks run on the CPU at small sizes)')
    section.line(f'nat_mm backends on {device.type}: {", ".join(backends)}')
    forward_only = FORWARD_ONLY.get(device.type, ())
    if forward_only:
        section.line(f'not checked on {device.type}: {", ".join(forward_only)} (forward only '
                     'there)')


def git_commit():
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, text=True,
                              capture_output=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown (no git checkout)'


def nvidia_smi_driver():
    try:
        return subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                              text=True, capture_output=True, check=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f'unknown (nvidia-smi: {error})'


# --------------------------------------------------------------------------- op tests


def make_op_inputs(case, dtype, rpb_dtype, device, seed, logit_scale=1.0):
    """q, k, v (B, heads, H, W, head_dim) in ``dtype`` and rpb (heads, 2K-1, 2K-1) in
    ``rpb_dtype`` on ``device``, the leaf tensors requiring grad, and a random output
    gradient (float32)."""
    batch, heads, height, width, head_dim, kernel, _, packed = case
    gen = torch.Generator().manual_seed(seed)
    if packed:
        qkv = torch.randn(batch, height, width, 3, heads, head_dim, generator=gen)
        qkv[:, :, :, :2] *= logit_scale
        qkv = qkv.to(device, dtype).requires_grad_()
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
        leaves = [qkv]
    else:
        q, k, v = (torch.randn(batch, heads, height, width, head_dim, generator=gen)
                   * scale for scale in (logit_scale, logit_scale, 1.0))
        q, k, v = (t.to(device, dtype).requires_grad_() for t in (q, k, v))
        leaves = [q, k, v]
    rpb = (torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen) * 0.5)
    rpb = rpb.to(device, rpb_dtype).requires_grad_()
    grad_out = torch.randn(batch, heads, height, width, head_dim, generator=gen)
    return (q, k, v, rpb), leaves + [rpb], grad_out.to(device)


def _qkv_grads(leaves):
    """(dq, dk, dv, drpb) from the leaves of ``make_op_inputs`` (None where missing)."""
    if len(leaves) == 2:                         # packed qkv, rpb
        packed = leaves[0].grad
        if packed is None:
            return None, None, None, leaves[1].grad
        dq, dk, dv = packed.permute(3, 0, 4, 1, 2, 5).unbind(0)
        return dq, dk, dv, leaves[1].grad
    return tuple(t.grad for t in leaves)


def op_check(attend, case, precision, device, seed=0, logit_scale=1.0):
    """Errors of ``attend`` (na2d with one backend) against the float64 reference for one
    case and precision.

    Returns dict(errors={out, dq, dk, dv, drpb: relative max error}, finite=bool,
    out_dtype=..., tol=...).
    """
    from nat_mm.ops.reference import na2d_reference
    from nat_mm.ops.self_check import rel_max_error
    dtype, rpb_dtype, autocast_dtype, tol = PRECISIONS[precision]
    _, _, _, _, _, kernel, dilation, _ = case
    (q, k, v, rpb), leaves, grad_out = make_op_inputs(case, dtype, rpb_dtype, device, seed,
                                                      logit_scale)
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                else contextlib.nullcontext())
    with autocast:
        out = attend(q, k, v, kernel, dilation, rpb)
    out.backward(grad_out.to(out.dtype))
    got = (out.detach(), *_qkv_grads(leaves))

    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v, rpb)]
    ref = na2d_reference(*ref_in[:3], kernel, dilation, ref_in[3])
    ref.backward(grad_out.double())
    expected = (ref.detach(), *(t.grad for t in ref_in))
    names = ('out', 'dq', 'dk', 'dv', 'drpb')
    errors = {name: float('inf') if g is None else rel_max_error(g, e)  # inf: no gradient
              for name, g, e in zip(names, got, expected)}
    finite = all(bool(torch.isfinite(g).all()) for g in got if g is not None)
    grad_dtypes_ok = all(t.grad is None or t.grad.dtype == t.dtype for t in leaves)
    return dict(errors=errors, finite=finite, grad_dtypes_ok=grad_dtypes_ok, tol=tol,
                out_dtype=str(out.dtype).replace('torch.', ''))


def self_checks(section, device, backends):
    """The first-use self-check (nat_mm/ops/self_check.py) of every checked backend here,
    per dtype, with the time it took (the first one includes compiling the probe's
    kernels)."""
    from nat_mm.ops import self_check
    for name in (n for n in backends if n in self_check.SELF_CHECKED):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            begin = time.monotonic()
            failure = self_check.probe(name, device, dtype)
            seconds = time.monotonic() - begin
            section.check(f'{name} first-use self-check, {str(dtype)[6:]}', failure is None,
                          failure or f'passed in {seconds:.2f}s')


def device_precisions(device):
    """The :data:`PRECISIONS` this torch runs on ``device`` (autocast dtypes it supports)."""
    from nat_mm.compat import autocast_supports
    return [name for name, (_, _, autocast_dtype, _) in PRECISIONS.items()
            if autocast_dtype is None or autocast_supports(device.type, autocast_dtype)]


def op_tests(section, report, device, backends, cases, large_logit_case):
    """The first-use self-checks, every backend x case x precision, then the large-logit
    cases."""
    from nat_mm.ops import na2d
    self_checks(section, device, backends)
    precisions = device_precisions(device)
    if len(precisions) < len(PRECISIONS):
        section.line(f'not supported by torch {torch.__version__} on {device.type}, left out: '
                     f'{", ".join(sorted(set(PRECISIONS) - set(precisions)))}')
    header = (f'{"backend":8s} {"case":44s} {"precision":18s} {"out":>8s} {"dq":>8s} {"dk":>8s} '
              f'{"dv":>8s} {"drpb":>8s} {"tol":>7s}')
    section.line('relative max error vs na2d_reference in float64 on the same inputs')
    section.line(header)
    section.line('-' * len(header))
    runs = [(backend, name, case, precision, 1.0) for backend in backends
            for name, case in cases.items() for precision in precisions]
    runs += [(backend, f'large logits x{LARGE_LOGIT_SCALE:g}: {large_logit_case[0]}',
              large_logit_case[1], precision, LARGE_LOGIT_SCALE)
             for backend in backends for precision in ('float16', 'bfloat16')]
    for backend, name, case, precision, logit_scale in runs:
        label = f'{backend} {name} {precision}'
        if report.elapsed() > report.budget_s:
            section.skip(label, 'time budget spent')
            continue
        try:
            result = op_check(functools.partial(na2d, backend=backend), case, precision, device,
                              logit_scale=logit_scale)
        except Exception as error:  # noqa: BLE001 - report and go on with the next case
            section.check(label, False, f'raised {type(error).__name__}: {error}')
            continue
        errors, tol = result['errors'], result['tol']
        section.line(f'{backend:8s} {name:44s} {precision:18s} '
                     + ' '.join(f'{errors[n]:8.1e}' for n in ('out', 'dq', 'dk', 'dv', 'drpb'))
                     + f' {tol:7.0e}')
        worst = max(errors, key=errors.get)
        problems = []
        if not result['finite']:
            problems.append('non-finite values')
        if not result['grad_dtypes_ok']:
            problems.append('a gradient dtype differs from its input')
        if errors[worst] > tol:
            problems.append(f'{worst} error {errors[worst]:.2e} > {tol:.0e}')
        detail = f'worst {worst} {errors[worst]:.1e}, output {result["out_dtype"]}'
        section.check(label, not problems, '; '.join(problems) or detail)
        if device.type == 'cuda':
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------- backbone


def rel_l2_error(got, expected):
    got, expected = got.double(), expected.double()
    return ((got - expected).norm() / expected.norm().clamp_min(1e-12)).item()


def backbone_step(model, inputs, weights, autocast_dtype):
    """Training-mode forward + backward of sum(w_i * out_i); returns (outputs float32 on
    CPU, {parameter name: grad float32 on CPU})."""
    model.train()
    autocast = (torch.autocast(inputs.device.type, dtype=autocast_dtype) if autocast_dtype
                else contextlib.nullcontext())
    with autocast:
        outs = model(inputs)
    loss = sum((out.float() * w).sum() for out, w in zip(outs, weights))
    loss.backward()
    grads = {name: p.grad.float().cpu() for name, p in model.named_parameters()
             if p.grad is not None}
    return [out.detach().float().cpu() for out in outs], grads


def backbone_variants(dry_run):
    """{name: NAT keyword arguments}: NAT-T and DiNAT-T; for a dry run two one-block-per-stage
    models (the same code at a CPU-friendly size; DiNAT-T's dilations would pad every map of
    a small input to 112x112)."""
    if dry_run:
        small = dict(arch=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                               mlp_ratio=2.))
        return {'NAT 1-1-1-1': small,
                'DiNAT 1-1-1-1': dict(small, dilations=[[2], [1], [1], [1]])}
    return {'NAT-T': dict(arch='tiny'),
            'DiNAT-T': dict(arch='tiny', dilations=DINAT_T_DILATIONS)}


def backbone_check(section, device, shape, variants):
    """Each of ``variants`` (name: NAT kwargs): bfloat16 autocast on ``device`` vs float32 on
    the CPU, training-mode forward + backward at ``shape`` (H, W, B)."""
    from nat_mm import NAT
    height, width, batch = shape
    for name, kwargs in variants.items():
        torch.manual_seed(0)
        cpu_model = NAT(drop_path_rate=0., **kwargs)
        device_model = copy.deepcopy(cpu_model).to(device)
        gen = torch.Generator().manual_seed(1)
        inputs = torch.randn(batch, 3, height, width, generator=gen)
        with torch.no_grad():
            shapes = [out.shape for out in cpu_model.eval()(inputs[:1])]
        weights = [torch.randn(batch, *s[1:], generator=gen) for s in shapes]
        begin = time.monotonic()
        expected, expected_grads = backbone_step(cpu_model, inputs, weights, None)
        cpu_s = time.monotonic() - begin
        begin = time.monotonic()
        got, grads = backbone_step(device_model, inputs.to(device),
                                   [w.to(device) for w in weights], torch.bfloat16)
        device_s = time.monotonic() - begin
        out_errors = [rel_l2_error(g, e) for g, e in zip(got, expected)]
        names = sorted(expected_grads)
        total = rel_l2_error(torch.cat([grads[n].flatten() for n in names]),
                             torch.cat([expected_grads[n].flatten() for n in names]))
        worst = max(names, key=lambda n: rel_l2_error(grads[n], expected_grads[n]))
        finite = all(bool(torch.isfinite(t).all()) for t in [*got, *grads.values()])
        section.line(f'{name} {height}x{width} batch {batch}: outputs (strides 4-32) rel. L2 '
                     f'error {", ".join(f"{e:.1e}" for e in out_errors)}; all gradients '
                     f'{total:.1e} (worst tensor {worst}: '
                     f'{rel_l2_error(grads[worst], expected_grads[worst]):.1e}); first step '
                     f'CPU float32 {cpu_s:.1f}s, {device.type} bfloat16 {device_s:.1f}s')
        section.check(f'{name} outputs, bfloat16 autocast on {device.type} vs float32 on CPU',
                      finite and max(out_errors) <= BACKBONE_TOL['outputs'],
                      f'max rel. L2 {max(out_errors):.1e} (bound {BACKBONE_TOL["outputs"]:.0e})'
                      + ('' if finite else '; NON-FINITE values'))
        section.check(f'{name} gradients, bfloat16 autocast on {device.type} vs float32 on CPU',
                      len(grads) == len(expected_grads) and total <= BACKBONE_TOL['grads'],
                      f'rel. L2 {total:.1e} (bound {BACKBONE_TOL["grads"]:.0e}), '
                      f'{len(grads)}/{len(expected_grads)} parameters with gradients')
        del cpu_model, device_model
        if device.type == 'cuda':
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------- benchmarks


def run_tool(section, name, arguments):
    """Runs tools/<name>.py with ``arguments``, copying its output into the section;
    returns the output lines. A failed run raises (the section fails with its output)."""
    script = TOOLS / f'{name}.py'
    command = [sys.executable, str(script), *arguments]
    section.line(f'$ python {script.relative_to(ROOT)} ' + ' '.join(arguments))
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(f'{name} exited with status {result.returncode}:\n'
                           f'{(result.stdout + result.stderr)[-4000:]}')
    lines = result.stdout.splitlines()
    for line in lines:
        section.line(line)
    return lines


def stage_cases(height=512, width=512, batch=2):
    """{name: (batch, heads, H, W, head_dim, kernel, dilation)}: the attention of every stage
    of NAT-T and of DiNAT-T (its dilations for this input, once each) on an input of
    ``height`` x ``width``."""
    from nat_mm.models.presets import ARCH_SETTINGS, resolve_dilations
    settings = ARCH_SETTINGS['tiny']
    dilations = resolve_dilations(DINAT_T_DILATIONS, settings['depths'])
    cases = {}
    for stage, heads in enumerate(settings['num_heads']):
        size_y, size_x = height // 2 ** (stage + 2), width // 2 ** (stage + 2)
        head_dim = settings['embed_dim'] * 2 ** stage // heads
        for dilation in sorted(set(dilations[stage])):
            model = 'NAT-T' if dilation == 1 else 'DiNAT-T'
            cases[f'{model} stage {stage + 1} (B{batch} h{heads} {size_y}x{size_x} '
                  f'd{head_dim} dil{dilation})'] = (batch, heads, size_y, size_x, head_dim, 7,
                                                    dilation)
    return cases


def compare_backends(section, report, device, backends, cases, dtypes, repeats):
    """Every backend on every case, dtype and mode (forward without grad; forward +
    backward): median times (interleaved), the fastest, and each output's relative max
    error against the reference on the same inputs (float32). Rows past the time budget
    are skipped."""
    from nat_mm.ops import na2d
    from nat_mm.ops.reference import na2d_reference
    from nat_mm.ops.self_check import rel_max_error
    from nat_mm.utils.profiling import interleaved_medians
    header = (f'{"case":52s} {"dtype":9s} {"mode":8s} '
              + ' '.join(f'{name + " ms":>11s}' for name in backends)
              + f' {"fastest":8s} output error ({", ".join(backends)})')
    section.line(f'median of {repeats} interleaved calls each ({device.type}); output error: '
                 'max|out - ref| / max|ref|, ref = na2d_reference in float32')
    section.line(header)
    section.line('-' * len(header))
    wins = {}
    for (name, case), dtype in ((item, dtype) for item in cases.items() for dtype in dtypes):
        if report.elapsed() > report.budget_s:
            section.skip(f'{name} {dtype}', 'time budget spent')
            continue
        batch, heads, height, width, head_dim, kernel, dilation = case
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(batch, heads, height, width, head_dim, generator=gen)
                   .to(device, getattr(torch, dtype)).requires_grad_() for _ in range(3))
        rpb = (torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen) * 0.5)
        rpb = rpb.to(device, getattr(torch, dtype)).requires_grad_()
        with torch.no_grad():
            reference = na2d_reference(q.float(), k.float(), v.float(), kernel, dilation,
                                       rpb.float())
            errors = [rel_max_error(na2d(q, k, v, kernel, dilation, rpb, backend=backend),
                                    reference) for backend in backends]
        del reference

        def call(backend, backward):
            def run():
                if not backward:
                    with torch.no_grad():
                        return na2d(q, k, v, kernel, dilation, rpb, backend=backend)
                na2d(q, k, v, kernel, dilation, rpb, backend=backend).sum().backward()
                for t in (q, k, v, rpb):
                    t.grad = None
            return run
        for mode in ('fwd', 'fwd+bwd'):
            times = interleaved_medians({backend: call(backend, mode == 'fwd+bwd')
                                         for backend in backends}, repeats, device)
            fastest = min(times, key=times.get)
            wins[fastest] = wins.get(fastest, 0) + 1
            section.line(f'{name:52s} {dtype:9s} {mode:8s} '
                         + ' '.join(f'{times[b] * 1e3:11.3f}' for b in backends)
                         + f' {fastest:8s} ' + ', '.join(f'{e:.1e}' for e in errors))
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    section.line('fastest (rows won): '
                 + ', '.join(f'{name} {count}' for name, count in wins.items()))
    return wins


def bench_op(section, report, device, dtype, backends, cases, repeats):
    """The backends compared (:func:`compare_backends`, the fast ones: not the export
    backend; on a dry run one small case), then tools/analysis_tools/benchmark_na.py's table
    per backend (on CPU with in-process memory peaks)."""
    fast = [name for name in backends if name != 'export']
    compare_cases = stage_cases() if device.type == 'cuda' else dict(
        list(stage_cases(64, 64, 1).items())[:1])
    compare_backends(section, report, device, fast, compare_cases, COMPARE_DTYPES, repeats)
    for backend in backends:
        run_tool(section, 'analysis_tools/benchmark_na',
                 ['--device', device.type, '--dtype', dtype, '--repeats', str(repeats),
                  '--backend', backend, '--memory-in-process',
                  *(['--cases', *cases] if cases else [])])


def swin_missing():
    """None when a Swin-T can be built (mmseg with mmcv ops, or timm); else why not."""
    try:
        import mmseg.registry  # noqa: F401  (needs mmcv with its compiled ops)
    except Exception:  # noqa: BLE001 - not installed, or mmcv without ops / wrong version
        if importlib.util.find_spec('timm') is None:
            return 'neither mmseg (with mmcv ops) nor timm imports'
    return None


def bench_backbone(section, device, dtype, shapes, modes, models, repeats):
    """tools/analysis_tools/benchmark_backbone.py's table and targets (on CPU with in-process
    memory peaks)."""
    if 'swin' in models and swin_missing():
        models = [m for m in models if m != 'swin']
        section.skip('Swin-T', swin_missing())
    lines = run_tool(section, 'analysis_tools/benchmark_backbone',
                     ['--device', device.type, '--dtype', dtype, '--repeats', str(repeats),
                      '--shapes', *shapes, '--modes', *modes, '--models', *models,
                      '--memory-in-process'])
    verdict = lines[-1] if lines else ''
    if verdict.endswith((': PASS', ': FAIL')):
        section.check(f'backbone targets ({device.type}, {dtype}; see the lines above)',
                      verdict.endswith(': PASS'))


# --------------------------------------------------------------------------- demo


def full_stack_missing():
    """None when mmcv (with ops), mmdet and mmseg import; else why not."""
    for package in ('mmcv', 'mmdet', 'mmseg'):
        if importlib.util.find_spec(package) is None:
            return f'{package} is not installed'
    try:
        for module in ('mmcv.ops', 'mmdet.models', 'mmseg.models'):
            importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - any import failure means no demo
        return f'{module} does not import ({type(error).__name__}: {error})'
    return None


def demo_command(task, out_dir):
    """The tools/demo.py command of a few ``task`` iterations with AMP."""
    return [sys.executable, str(TOOLS / 'demo.py'), '--task', task,
            '--work-dir', str(Path(out_dir) / f'demo_{task}'),
            '--data-root', str(Path(out_dir) / f'demo_{task}_data'),
            '--num-pictures', '2', '--cfg-options', *DEMO_TASKS[task]]


def demo(section, out_dir):
    for task in DEMO_TASKS:
        command = demo_command(task, out_dir)
        section.line('$ ' + ' '.join(command))
        begin = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        output = (result.stdout + result.stderr).splitlines()
        summary = [line for line in output if line.strip().startswith(('metrics:', 'checkpoint:'))]
        for line in summary or output[-15:]:
            section.line(line)
        metrics = [line for line in summary if line.strip().startswith('metrics:')]
        section.check(f'{task} demo with AMP ({time.monotonic() - begin:.0f}s)',
                      result.returncode == 0 and metrics and 'nan' not in metrics[0],
                      f'exit status {result.returncode}'
                      + ('' if metrics else ', no metrics line'))


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='folder for gpu_check.md / .json')
    parser.add_argument('--dry-run', action='store_true',
                        help='no GPU: the CPU-capable parts at small sizes')
    parser.add_argument('--budget', type=float, default=BUDGET_S,
                        help=f'seconds; later sections are skipped (default {BUDGET_S})')
    parser.add_argument('--repeats', type=int, default=10,
                        help='timed repeats of the benchmarks (median; default 10)')
    parser.add_argument('--skip', nargs='+', choices=SECTIONS[1:], default=[],
                        help='sections not to run')
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error(f'--budget must be > 0 seconds, got {args.budget:g}')
    if args.repeats < 1:
        parser.error(f'--repeats must be >= 1, got {args.repeats}')
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f'--out {args.out} is a file; give a folder')
    if not args.dry_run and not torch.cuda.is_available():
        parser.error(f'CUDA is not available (torch {torch.__version__}, CUDA '
                     f'{torch.version.cuda}); run on a GPU machine, or add --dry-run to check '
                     'the CPU-capable parts here')
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    report = Report(args.out, argv, args.budget)
    device = torch.device('cpu' if args.dry_run else 'cuda')
    if args.dry_run:
        op_cases, large = SMALL_CASES, next(iter(SMALL_CASES.items()))
        backbone_shape, bench_cases = (32, 32, 1), ['stage3@512 (B2 h8 32x32)']
        bench_shapes, bench_modes = ['32x32:1'], ['train']
        bench_models, repeats = ['nat', 'floor'], 1
    else:
        op_cases = {**SMALL_CASES, **NAT_CASES}
        large = next(iter(NAT_CASES.items()))
        backbone_shape, bench_cases = (512, 512, 2), None
        bench_shapes, bench_modes = ['512x512:2', '800x1344:2'], ['infer', 'train']
        bench_models, repeats = None, args.repeats

    cv2_line = opencv_line()
    backends = backends_for(device.type)
    with report.section('environment') as section:
        environment(section, device, cv2_line, backends)
    steps = {
        'ops': (f'op tests on {device.type}',
                lambda s: op_tests(s, report, device, backends, op_cases, large)),
        'backbone': (f'backbone on {device.type} (bfloat16 autocast) vs float32 on the CPU',
                     lambda s: backbone_check(s, device, backbone_shape,
                                              backbone_variants(args.dry_run))),
        'bench-op': (f'benchmark: neighbourhood attention ({device.type}, bfloat16)',
                     lambda s: bench_op(s, report, device, 'bfloat16', backends, bench_cases,
                                        repeats)),
        'bench-backbone': (f'benchmark: backbones ({device.type}, bfloat16)',
                           lambda s: bench_backbone(s, device, 'bfloat16', bench_shapes,
                                                    bench_modes,
                                                    bench_models or ['nat', 'swin', 'floor'],
                                                    repeats)),
    }
    for key, (title, run) in steps.items():
        if key in args.skip:
            report.skip_section(title, '--skip')
        elif report.elapsed() > args.budget:
            report.skip_section(title, f'time budget of {args.budget:.0f}s spent')
        else:
            with report.section(title) as section:
                run(section)
    title = 'demo: UperNet and Mask R-CNN with AMP'
    missing = full_stack_missing()
    if 'demo' in args.skip:
        report.skip_section(title, '--skip')
    elif device.type != 'cuda':
        report.skip_section(title, 'AMP training needs CUDA (dry run)')
    elif missing:
        report.skip_section(title, f'needs the full stack: {missing}')
    elif report.elapsed() > args.budget:
        report.skip_section(title, f'time budget of {args.budget:.0f}s spent')
    else:
        with report.section(title) as section:
            demo(section, args.out)
    print(f'\ngpu_check: {"PASS" if report.passed else "FAIL"} in {report.elapsed():.0f}s; '
          f'report: {Path(args.out) / (REPORT_NAME + ".md")}', flush=True)
    return 0 if report.passed else 1


if __name__ == '__main__':
    sys.exit(main())
