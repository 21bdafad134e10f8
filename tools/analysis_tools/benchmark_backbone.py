"""Benchmark the NAT-Tiny backbone against Swin-T and against its attention-free floor.

Measured side by side in one run (times are medians of interleaved repeats):

* ``nat``: ``nat_mm.NAT(arch='tiny')``;
* ``swin``: Swin-T exactly as MMSegmentation ships it (the backbone of its
  UperNet Swin-T ADE20K config, built by ``mmseg.registry.MODELS``), or, where
  mmseg is not installed (``--swin auto``) or with ``--swin timm``, timm's
  ``swin_tiny_patch4_window7_224`` (``features_only``, ``img_size`` set to the
  input, no pretrained weights): the same architecture, needing no mmcv ops;
* ``floor``: the same NAT-Tiny with only the attention core (QK, softmax, AV)
  replaced by passing ``value`` through; qkv/proj linears, norms, MLPs and
  convolutions stay. The gap ``nat - floor`` is the attention core's cost.

Modes: ``infer`` (eval mode, no_grad, forward) and ``train`` (train mode,
forward + backward of the sum of all outputs). Both backbones use the
``--drop-path`` rate (default 0.3, the value of both UperNet ADE20K configs).
With ``--dtype bfloat16|float16`` the forward runs under ``torch.autocast``.

Times and the peak memory of one step, after a warm-up step, are measured by
:mod:`nat_mm.utils.profiling`: on CUDA with CUDA events and
``torch.cuda.max_memory_allocated`` beyond what was allocated before the step;
on CPU with ``time.perf_counter`` and the growth of the peak resident set size
(high-water mark reset before the step) of a fresh subprocess per (model,
mode, shape).

The targets checked at the end depend on the device (``TARGETS``): on CPU the
training step at 512x512 batch 2 within 1.0x Swin-T's time and memory and
1.25x the floor's time; on CUDA the training step at 512x512 and 800x1344,
batch 2, within 1.0x Swin-T's time and 0.7x its memory.

Examples::

    python tools/analysis_tools/benchmark_backbone.py             # 512x512:2 and 800x1344:1
    python tools/analysis_tools/benchmark_backbone.py --shapes 256x256 --repeats 1   # quick
    python tools/analysis_tools/benchmark_backbone.py --device cuda --dtype bfloat16 \
        --repeats 10 --shapes 512x512:2 800x1344:2              # the GPU targets
    python tools/analysis_tools/benchmark_backbone.py --shapes 512x512:2 --modes train --profile
"""
import argparse
import contextlib
import json
import re
import sys
from pathlib import Path

import torch
from torch import nn

from nat_mm import NAT
from nat_mm.cli.options import add_measurement_options, check_measurement_options
from nat_mm.ops import na_backend
from nat_mm.ops.backends import Backend
from nat_mm.utils.profiling import (device_name, interleaved_medians, peak_memory_in_fresh_process,
                                    synchronize, timer_name)
from nat_mm.utils.profiling import peak_memory as measure_peak

MODELS = {'nat': 'NAT-Tiny', 'swin': 'Swin-T', 'floor': 'NAT-T floor'}
MODES = ('infer', 'train')
DEFAULT_SHAPES = ('512x512:2', '800x1344:1')
#: The config (inside the installed mmseg) whose backbone is "Swin-T as MMSegmentation ships it".
SWIN_CONFIG = 'configs/swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
SWIN_SOURCES = ('auto', 'mmseg', 'timm')
#: The timm model used as Swin-T where mmseg is not installed.
TIMM_SWIN = 'swin_tiny_patch4_window7_224'
#: Per device type: the mode and shapes of the targets checked at the end, and
#: the bounds on NAT's ratios to the other models there ((model, quantity): bound).
TARGETS = {
    'cpu': dict(mode='train', shapes=('512x512:2',),
                bounds={('swin', 'time'): 1.0, ('swin', 'memory'): 1.0, ('floor', 'time'): 1.25}),
    'cuda': dict(mode='train', shapes=('512x512:2', '800x1344:2'),
                 bounds={('swin', 'time'): 1.0, ('swin', 'memory'): 0.7}),
}


def parse_shape(text):
    """'HxW' or 'HxW:B' -> (H, W, B); B defaults to 1."""
    match = re.fullmatch(r'(\d+)x(\d+)(?::(\d+))?', text)
    if not match:
        raise argparse.ArgumentTypeError(f'shape must look like 512x512 or 512x512:2, got {text!r}')
    height, width, batch = int(match[1]), int(match[2]), int(match[3] or 1)
    if min(height, width, batch) < 1:
        raise argparse.ArgumentTypeError(f'shape sizes must be >= 1, got {text!r}')
    return height, width, batch


def shape_name(shape):
    height, width, batch = shape
    return f'{height}x{width}:{batch}'


def _pass_value_through(query, key, value, kernel_size, dilation, rpb, scale, dropout_p):
    return value


#: The backend of the floor: passes ``value`` through (a record given to nat_mm's seam, not
#: registered).
FLOOR_BACKEND = Backend('attention_free', _pass_value_through)


class AttentionFree(nn.Module):
    """Runs ``model`` with the neighbourhood attention core replaced by identity on v.

    Every :func:`nat_mm.na2d` call of the forward uses the ``FLOOR_BACKEND``
    (``nat_mm.ops.na_backend``); the backward of the floor never reaches the
    attention op.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs):
        with na_backend(FLOOR_BACKEND):
            return self.model(inputs)


def swin_source(requested='auto'):
    """'mmseg' or 'timm': which Swin-T ``build_swin`` builds for ``--swin requested``."""
    if requested != 'auto':
        return requested
    try:
        import mmseg.registry  # noqa: F401  (needs mmcv with its compiled ops)
    except Exception:  # noqa: BLE001 - not installed, or mmcv without ops / wrong version
        return 'timm'
    return 'mmseg'


def build_swin(drop_path_rate, shape, source='auto'):
    """Swin-T without pretrained weights: MMSegmentation's (the backbone of its UperNet
    Swin-T config) or timm's ``features_only`` model for inputs of ``shape`` (H, W, B)."""
    if swin_source(source) == 'timm':
        try:
            import timm
        except ImportError as error:
            raise RuntimeError('benchmark: Swin-T needs mmsegmentation or timm; neither '
                               f'imports ({error}); pip install timm, or drop swin from '
                               '--models') from error
        return timm.create_model(TIMM_SWIN, pretrained=False, features_only=True,
                                 img_size=shape[:2], drop_path_rate=drop_path_rate)
    import mmseg
    from mmengine.config import Config
    from mmseg.registry import MODELS as MMSEG_MODELS
    from mmseg.utils import register_all_modules
    config = Path(mmseg.__file__).parent / '.mim' / SWIN_CONFIG
    if not config.is_file():
        raise FileNotFoundError(f'benchmark: the Swin-T config {config} is not in the installed '
                                'mmsegmentation')
    register_all_modules(init_default_scope=False)
    backbone = Config.fromfile(config).model.backbone
    backbone.pop('init_cfg', None)
    backbone.drop_path_rate = drop_path_rate
    return MMSEG_MODELS.build(backbone)


def build_model(name, drop_path_rate, shape, swin='auto'):
    """One of ``MODELS`` for inputs of ``shape`` (H, W, B), seeded."""
    torch.manual_seed(0)
    if name == 'swin':
        return build_swin(drop_path_rate, shape, swin)
    nat = NAT(arch='tiny', drop_path_rate=drop_path_rate)
    return AttentionFree(nat) if name == 'floor' else nat


def make_inputs(shape, device):
    height, width, batch = shape
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, height, width, generator=gen).to(device)


def run_step(model, inputs, mode, dtype):
    """One inference forward or one training forward + backward of sum(outputs)."""
    model.train(mode == 'train')
    autocast = (torch.autocast(inputs.device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())
    if mode == 'infer':
        with torch.no_grad(), autocast:
            model(inputs)
        return 0
    with autocast:
        loss = sum(out.float().sum() for out in model(inputs))
    loss.backward()
    for param in model.parameters():
        param.grad = None


def time_models(models, inputs, modes, dtype, repeats):
    """{(model, mode): median seconds}; repeats interleave models and modes, after
    one warm-up step of each (caches, allocator, kernels)."""
    def step(model, mode):
        return lambda: run_step(model, inputs, mode, dtype)
    return interleaved_medians({(name, mode): step(model, mode) for mode in modes
                                for name, model in models.items()}, repeats, inputs.device)


def peak_memory_here(model, inputs, mode, dtype):
    """Peak bytes of one step beyond what was held before it (this process),
    measured after a warm-up step (lazily built caches are not counted)."""
    run_step(model, inputs, mode, dtype)
    return measure_peak(lambda: run_step(model, inputs, mode, dtype), inputs.device)


def peak_memory(name, mode, shape, args, models, inputs, fresh_process=True):
    """CUDA: measured in this process; CPU: in a fresh subprocess (peak RSS is per process),
    or with ``fresh_process=False`` in this one (quicker; memory freed earlier in this
    process may be reused unseen)."""
    if inputs.device.type == 'cuda' or not fresh_process:
        return peak_memory_here(models[name], inputs, mode, getattr(torch, args.dtype))
    return peak_memory_in_fresh_process(
        [__file__, '--memory-probe', json.dumps([name, mode, list(shape)]),
         '--dtype', args.dtype, '--drop-path', str(args.drop_path), '--swin', args.swin])


def profile_training_step(models, inputs, dtype, row_limit):
    """Prints the ops with the largest self time of one training step per model."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    sort_by = 'self_cpu_time_total'
    if inputs.device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
        sort_by = 'self_device_time_total'
    for name, model in models.items():
        run_step(model, inputs, 'train', dtype)
        with profile(activities=activities) as prof:
            run_step(model, inputs, 'train', dtype)
            synchronize(inputs.device)
        print(f'\nprofile: {MODELS[name]}, one training step, top {row_limit} ops by self time')
        print(prof.key_averages().table(sort_by=sort_by, row_limit=row_limit))


def ratio(numerator, denominator):
    return numerator / denominator if denominator > 0 else float('nan')


def table_lines(results, shapes, modes, names):
    """The table as lines; results[(shape, mode)] = dict(time={name: s}, memory={name: bytes})."""
    header = (f'{"shape":11s} {"mode":5s} | ' + ' '.join(f'{MODELS[n]:>11s}' for n in names)
              + f' | {"NAT/Swin":>8s} {"NAT/floor":>9s} {"attn share":>10s} | '
              + ' '.join(f'{"mem " + MODELS[n]:>15s}' for n in names) + f' | {"mem NAT/Swin":>12s}')
    lines = [header, '-' * len(header)]
    for shape in shapes:
        for mode in modes:
            time_, memory = results[(shape, mode)]['time'], results[(shape, mode)]['memory']
            cells = ' '.join(f'{time_[n]:10.3f}s' for n in names)
            vs_swin = ratio(time_['nat'], time_['swin']) if 'swin' in names else float('nan')
            vs_floor = ratio(time_['nat'], time_['floor']) if 'floor' in names else float('nan')
            share = (ratio(time_['nat'] - time_['floor'], time_['nat'])
                     if 'floor' in names else float('nan'))
            mem_cells = ' '.join(f'{memory[n] / 2**20:13.0f}MB' for n in names)
            mem_vs_swin = ratio(memory['nat'], memory['swin']) if 'swin' in names else float('nan')
            lines.append(f'{shape_name(shape):11s} {mode:5s} | {cells} | {vs_swin:7.2f}x '
                         f'{vs_floor:8.2f}x {share:9.1%} | {mem_cells} | {mem_vs_swin:11.2f}x')
    return lines


def check_targets(results, device_type):
    """(passed or None when not measured, PASS/FAIL lines) for the targets of ``device_type``."""
    target = TARGETS[device_type]
    mode = target['mode']
    needed = sorted({name for name, _ in target['bounds']} | {'nat'})
    shapes = [parse_shape(text) for text in target['shapes']]
    measured = [(shape, mode) in results and all(n in results[(shape, mode)]['time']
                                                 for n in needed) for shape in shapes]
    if not all(measured):
        return None, [f'targets ({device_type}): NOT MEASURED (need --shapes '
                      f'{" ".join(target["shapes"])}, --modes {mode} and --models '
                      f'{" ".join(needed)})']
    lines, passed = [], True
    for shape in shapes:
        result = results[(shape, mode)]
        for (other, quantity), bound in target['bounds'].items():
            value = ratio(result[quantity]['nat'], result[quantity][other])
            ok = value <= bound
            passed &= ok
            lines.append(f'{"PASS" if ok else "FAIL"}: {mode} step {shape_name(shape)}: NAT '
                         f'{"peak memory" if quantity == "memory" else "time"} <= {bound:.2f}x '
                         f'{MODELS[other]} (measured {value:.2f}x)')
    lines.append(f'targets ({device_type}): {"PASS" if passed else "FAIL"}')
    return passed, lines


def describe(models, dtype, repeats, device, swin, fresh_process):
    """The title lines: hardware, versions, what each model is."""
    where = 'fresh process' if fresh_process else 'this process'
    lines = [f'backbone benchmark: {str(dtype).replace("torch.", "")}, {device_name(device)}, '
             f'torch {torch.__version__}; time: median of {repeats} interleaved repeats '
             f'({timer_name(device)}); memory: peak extra '
             'of one step after a warm-up step '
             f'({"max_memory_allocated" if device.type == "cuda" else "peak RSS, " + where})']
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        source = f' ({swin_source(swin)})' if name == 'swin' else ''
        lines.append(f'  {name:5s} = {MODELS[name]}{source}: {params:.2f}M parameters')
    lines.append('  attn share = (NAT - floor) / NAT time: the attention core (QK, softmax, AV)')
    return lines


def benchmark(args, emit=print, fresh_process=True):
    """Measures every shape and mode of ``args`` (see ``parse_args``), passing the
    lines of the report to ``emit``; returns (results, targets passed or None).
    ``fresh_process``: see ``peak_memory``."""
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    results = {}
    for index, shape in enumerate(args.shapes):
        models = {name: build_model(name, args.drop_path, shape, args.swin).to(device)
                  for name in args.models}
        if index == 0:
            for line in describe(models, dtype, args.repeats, device, args.swin, fresh_process):
                emit(line)
        inputs = make_inputs(shape, device)
        times = time_models(models, inputs, args.modes, dtype, args.repeats)
        for mode in args.modes:
            results[(shape, mode)] = dict(
                time={name: times[(name, mode)] for name in models},
                memory={name: peak_memory(name, mode, shape, args, models, inputs,
                                          fresh_process) for name in models})
        emit(f'  measured {shape_name(shape)}')
        del models, inputs
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    emit('')
    for line in table_lines(results, args.shapes, args.modes, list(args.models)):
        emit(line)
    passed, lines = check_targets(results, device.type)
    for line in lines:
        emit(line)
    if args.profile:
        shape = args.shapes[0]
        models = {name: build_model(name, args.drop_path, shape, args.swin).to(device)
                  for name in args.models}
        profile_training_step(models, make_inputs(shape, device), dtype, args.profile_rows)
    return results, passed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_measurement_options(parser, repeats=3)
    parser.add_argument('--shapes', nargs='+', type=parse_shape,
                        default=[parse_shape(s) for s in DEFAULT_SHAPES],
                        help='HxW or HxW:B (batch, default 1); default: '
                             + ' '.join(DEFAULT_SHAPES))
    parser.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES))
    parser.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    parser.add_argument('--swin', choices=SWIN_SOURCES, default='auto',
                        help="Swin-T from mmseg or timm; auto: mmseg when it imports, else timm")
    parser.add_argument('--drop-path', type=float, default=0.3,
                        help='drop-path rate of both backbones (their ADE20K configs use 0.3)')
    parser.add_argument('--profile', action='store_true',
                        help='also print the top ops of one training step per model '
                             '(first shape)')
    parser.add_argument('--profile-rows', type=int, default=15)
    parser.add_argument('--check-targets', action='store_true',
                        help="exit with status 1 unless the device's targets were measured "
                        'and met')
    args = parser.parse_args(argv)
    check_measurement_options(parser, args)
    if 'nat' not in args.models:
        parser.error('--models must include nat (every ratio is relative to it)')
    if args.device == 'cpu' and args.dtype == 'float16':
        parser.error('--dtype float16 needs --device cuda (use bfloat16 on CPU)')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_probe:
        name, mode, shape = json.loads(args.memory_probe)
        device = torch.device(args.device)
        model = build_model(name, args.drop_path, tuple(shape), args.swin).to(device)
        print(peak_memory_here(model, make_inputs(tuple(shape), device), mode,
                               getattr(torch, args.dtype)))
        return 0
    _, passed = benchmark(args, emit=lambda line: print(line, flush=True),
                          fresh_process=not args.memory_in_process)
    return 1 if args.check_targets and not passed else 0


if __name__ == '__main__':
    sys.exit(main())
