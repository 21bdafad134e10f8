"""Inference speed (images per second) and peak memory of a config's model, on its test data.

As MMDetection's ``tools/analysis_tools/benchmark.py``: CONFIG [CHECKPOINT] builds the
detector or segmentor of an MMDetection / MMSegmentation config (random weights without a
checkpoint: the speed is the same), reads ``--num-warmup + --max-iter`` batches of its
test dataloader first, then times ``model.test_step`` (preprocessing, forward,
post-processing) on each, in eval mode without gradients. Reports the images per second
over the timed batches, the median time per batch and the peak extra memory of the timed
loop beyond the model and the batches (:mod:`nat_mm.utils.profiling`: CUDA events and
``max_memory_allocated`` on CUDA; ``perf_counter`` and peak RSS growth on a CPU).

Examples:
    python tools/analysis_tools/benchmark.py configs/upernet_nat_tiny_ade20k.py CHECKPOINT
    python tools/analysis_tools/benchmark.py configs/mask_rcnn_nat_tiny_coco.py \
        --max-iter 100 --device cuda
"""
import argparse
import importlib
import statistics

import torch
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS
from mmengine.runner import Runner, load_checkpoint

from nat_mm.cli.options import add_config_options
from nat_mm.utils import load_config
from nat_mm.utils.profiling import device_name, elapsed, peak_memory, timer_name

SCOPES = ('mmdet', 'mmseg')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='an MMDetection or MMSegmentation config')
    parser.add_argument('checkpoint', nargs='?', help='weights (default: random)')
    parser.add_argument('--max-iter', type=int, default=50, help='timed batches')
    parser.add_argument('--num-warmup', type=int, default=5, help='untimed batches first')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    add_config_options(parser, example='model.backbone.drop_path_rate=0')
    args = parser.parse_args(argv)
    if args.max_iter < 1 or args.num_warmup < 0:
        parser.error('--max-iter must be >= 1 and --num-warmup >= 0')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available; use --device cpu')
    return args


def build_model(cfg, checkpoint, device):
    """The config's model in eval mode on ``device`` (BN instead of SyncBN), with the
    checkpoint's weights or, without one, random ones (no pretrained file is read)."""
    model_cfg = cfg.model.copy()
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    return revert_sync_batchnorm(model).to(device).eval()


def read_batches(cfg, count):
    """``count`` batches of the test dataloader (fewer if it has fewer), held in memory."""
    batches = []
    for batch in Runner.build_dataloader(cfg.test_dataloader):
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def benchmark(cfg, checkpoint, device, max_iter, num_warmup):
    """dict(images, batches, seconds: [per timed batch], fps, peak_bytes)."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'benchmark: default_scope {scope!r} is not one of {SCOPES}; give an '
                         'MMDetection or MMSegmentation config')
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=True)
    model = build_model(cfg, checkpoint, device)
    batches = read_batches(cfg, num_warmup + max_iter)
    warmup, timed = batches[:num_warmup], batches[num_warmup:]
    if not timed:
        raise ValueError(f'benchmark: the test dataloader has {len(batches)} batches, all '
                         f'used by --num-warmup {num_warmup}; lower it')
    seconds = []

    def run(batches, times):
        for batch in batches:
            times.append(elapsed(lambda: model.test_step(batch), device))
    with torch.no_grad():
        run(warmup, [])
        peak = peak_memory(lambda: run(timed, seconds), device)
    images = sum(len(batch['inputs']) for batch in timed)
    return dict(images=images, batches=len(timed), seconds=seconds,
                fps=images / sum(seconds), peak_bytes=peak)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    device = torch.device(args.device)
    result = benchmark(cfg, args.checkpoint, device, args.max_iter, args.num_warmup)
    weights = f'checkpoint {args.checkpoint}' if args.checkpoint else 'random weights'
    print(f'{args.config}: {result["fps"]:.2f} images/s over {result["images"]} images '
          f'({result["batches"]} batches, median {statistics.median(result["seconds"]):.3f} '
          f's per batch, {timer_name(device)}); peak extra memory '
          f'{result["peak_bytes"] / 2**20:.0f} MB; {device_name(device)}, torch '
          f'{torch.__version__}, {weights}')
    return result


if __name__ == '__main__':
    main()
