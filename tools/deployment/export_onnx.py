"""Export a config's model to ONNX and check it in ONNX Runtime next to PyTorch.

Segmentation configs (mmseg) export the whole segmentor's tensor forward (the
decode head's logits at 1/4 of the input size); detection configs (mmdet)
export backbone + neck (the RPN/RoI heads use mmcv's RoI ops, which ONNX has
no equivalent of); Mask2Former configs are refused. Then the file runs in ONNX
Runtime (CPU) on the same random input as eager PyTorch, and the tool prints the
largest absolute and relative difference and both latencies, measured
interleaved in this run.

Without --dynamic the file accepts exactly --shape; with --dynamic any height
and width in [32, 4096] (checked at the --shape given and, with
--check-shape, at more sizes).

Examples::

    python tools/deployment/export_onnx.py configs/upernet_nat_tiny_ade20k.py --shape 512 512
    python tools/deployment/export_onnx.py configs/mask_rcnn_nat_tiny_coco.py CKPT \\
        --shape 800 1344 --dynamic --check-shape 512 683 --out mask_rcnn_nat_tiny.onnx
"""
import argparse
import os.path as osp

import torch

from nat_mm.cli.options import add_config_options
from nat_mm.compat import require_export_support
from nat_mm.deploy import (OnnxModel, build_deploy_model, export_onnx,
                           max_differences, random_image)
from nat_mm.utils.profiling import interleaved_medians


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', default=None)
    parser.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'),
                        help='input height and width of the export (and of the check)')
    parser.add_argument('--dynamic', action='store_true',
                        help='symbolic height and width: one file for every size in [32, 4096]')
    parser.add_argument('--check-shape', type=int, nargs=2, action='append', default=[],
                        metavar=('H', 'W'), help='more sizes to compare at (with --dynamic)')
    parser.add_argument('--out', default=None, help='output file (default: CONFIG_NAME.onnx)')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs of each (median)')
    add_config_options(parser, example='model.backbone.drop_path_rate=0')
    return parser.parse_args(argv)


def main(argv=None):
    """Returns dict(out=the .onnx path, rows=[dict(shape, max_abs_diff, max_rel_diff,
    eager_s, onnxrt_s) per compared size])."""
    args = parse_args(argv)
    try:
        require_export_support('tools/deployment/export_onnx.py')
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None   # before the model is built: one line
    if args.check_shape and not args.dynamic:
        raise SystemExit('--check-shape needs --dynamic: a static export runs at --shape only')
    out = args.out or osp.splitext(osp.basename(args.config))[0] + '.onnx'
    deploy = build_deploy_model(args.config, args.checkpoint, args.cfg_options)
    what = 'segmentor logits' if deploy.task == 'seg' else 'backbone + neck'
    print(f'exporting {what} of {args.config} at {args.shape[0]}x{args.shape[1]}'
          f'{" (dynamic height/width)" if args.dynamic else ""} -> {out}')
    export_onnx(deploy.module, tuple(args.shape), out, dynamic=args.dynamic,
                output_names=deploy.output_names, metadata=dict(deploy.metadata,
                                                               task=deploy.task))
    session = OnnxModel(out)
    print(f'threads: {torch.get_num_threads()} (PyTorch and ONNX Runtime), '
          f'torch {torch.__version__}')
    print(f'{"shape":>11} | {"max abs diff":>12} {"max rel diff":>12} | '
          f'{"eager":>9} {"onnxrt":>9} {"ort/eager":>9}')
    rows = []
    for i, (height, width) in enumerate([tuple(args.shape)] + [tuple(s) for s in args.check_shape]):
        image = random_image(height, width, seed=i)
        with torch.no_grad():
            expected = deploy.module(image)
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        abs_diff, rel_diff = max_differences(expected, session(image))

        def eager():
            with torch.no_grad():
                deploy.module(image)

        times = interleaved_medians({'eager': eager, 'onnxrt': lambda: session(image)},
                                    args.repeats)
        print(f'{height:>5}x{width:<5} | {abs_diff:12.3e} {rel_diff:12.3e} | '
              f'{times["eager"]:8.3f}s {times["onnxrt"]:8.3f}s '
              f'{times["onnxrt"] / times["eager"]:8.2f}x')
        rows.append(dict(shape=(height, width), max_abs_diff=abs_diff, max_rel_diff=rel_diff,
                         eager_s=times['eager'], onnxrt_s=times['onnxrt']))
    return dict(out=out, rows=rows)


if __name__ == '__main__':
    try:
        main()
    except ValueError as error:
        raise SystemExit(f'error: {error}')
