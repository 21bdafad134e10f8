"""Evaluate a NAT / DiNAT detector, segmentor or ImageNet classifier checkpoint.

One script for MMDetection, MMSegmentation and MMPretrain configs (the config's
``default_scope`` selects mmdet, mmseg or mmpretrain).

Examples:
    python tools/test.py configs/upernet_nat_tiny_ade20k.py work_dirs/x/iter_160000.pth
    python tools/test.py configs/mask_rcnn_nat_tiny_coco.py CHECKPOINT --out results.pkl
    python tools/test.py CONFIG CHECKPOINT --show-dir vis    # pictures of the predictions
    python tools/test.py configs/upernet_nat_tiny_ade20k.py CHECKPOINT --tta   # multi-scale + flip
    python tools/test.py configs/mmpretrain/nat/nat-tiny_8xb128_in1k.py checkpoints/nat_tiny.pth
    python tools/test.py configs/mmpretrain/dinat/dinat-tiny_8xb128_in1k.py HUB_FOLDER  # top-1/5
    bash tools/dist_test.sh CONFIG CHECKPOINT 8

A classification config loads the official classifier file, a Hugging Face Hub folder
(shi-labs/nat-*, shi-labs/dinat-*) or an MMEngine checkpoint of it, head included
(nat_mm/launch/classifier_runner.py).
"""
import argparse
import os.path as osp

from demo import demo_command

from nat_mm.cli.options import add_config_options, add_launcher_options, parse_launcher_args
from nat_mm.launch import (adapt_config_to_device, build_runner, check_dataset_files,
                           check_dataset_paths, init_distributed, load_run_config,
                           shutdown_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Evaluate a NAT detector, segmentor or classifier')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (classifiers: or a Hub folder)')
    parser.add_argument('--work-dir', help='folder for the evaluation logs '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--show-dir', help='draw the predictions: detection into '
                        '<work dir>/<timestamp>/SHOW_DIR, segmentation into SHOW_DIR/vis_data, '
                        'classification into SHOW_DIR')
    parser.add_argument('--out', help='keep the predictions: detection and classification as '
                        'a .pkl file, segmentation as label-map PNGs in this folder')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation: the config\'s tta_pipeline as the test '
                        'pipeline and its tta_model around the model (ADE20K configs: scales '
                        '0.5-1.75 and flip, as published)')
    add_config_options(parser, example='test_dataloader.dataset.data_root=/data/ade')
    add_launcher_options(parser)
    return parse_launcher_args(parser, argv)


#: The metric that writes the raw predictions to a .pkl file, by default_scope.
DUMP_METRICS = {'mmdet': 'DumpDetResults', 'mmpretrain': 'DumpResults'}


def enable_visualization(cfg, show_dir):
    """Turn on the task's visualization hook, as mmdet's, mmseg's and mmpretrain's own test
    tools do."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show-dir needs default_hooks.visualization in the config')
    if cfg.default_scope == 'mmpretrain':  # its VisualizationHook: enable, out_dir
        hook.enable = True
        hook.out_dir = show_dir
        hook.interval = 1  # every image (its default draws one in 5000)
        return
    hook.draw = True
    if cfg.default_scope == 'mmdet':
        hook.test_out_dir = show_dir
    else:
        cfg.visualizer.save_dir = show_dir
        hook.interval = 1  # every image, as mmdet's hook draws in testing


def save_predictions(cfg, out):
    """Keep the raw predictions, in each library's own way."""
    if cfg.default_scope in DUMP_METRICS:
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl or .pickle file for detection and '
                             f'classification, got {out}')
        evaluators = cfg.test_evaluator
        if isinstance(evaluators, dict):
            evaluators = [evaluators]
        cfg.test_evaluator = list(evaluators) + [
            dict(type=DUMP_METRICS[cfg.default_scope], out_file_path=out)]
    else:
        cfg.test_evaluator.output_dir = out
        cfg.test_evaluator.keep_results = True


def enable_tta(cfg):
    """Test with the config's ``tta_pipeline``, merging the augmented predictions with its
    ``tta_model`` (which wraps the model), as mmdet's and mmseg's own test tools do."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
    if missing:
        raise ValueError(
            f'--tta needs {" and ".join(missing)} in the config {cfg.filename}: '
            "tta_model (e.g. dict(type='SegTTAModel') or dict(type='DetTTAModel', ...)) "
            'merges the predictions, tta_pipeline (a TestTimeAug pipeline) makes the '
            'augmented images; add them to the config or test without --tta')
    cfg.model = dict(cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def build_config(args):
    cfg = load_run_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.tta:
        enable_tta(cfg)
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.out:
        save_predictions(cfg, args.out)
    adapt_config_to_device(cfg, args.launcher)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    if not osp.exists(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist: give the path of '
                                'a trained checkpoint (e.g. WORK_DIR/iter_N.pth of tools/train.py)'
                                ', an official .pth file or a Hugging Face Hub folder')
    cfg = build_config(args)
    check_dataset_paths(cfg, mode='test', alternative=demo_command(cfg.get('default_scope')))
    check_dataset_files(cfg, mode='test')
    init_distributed(args.launcher)
    runner = build_runner(cfg)
    metrics = runner.test()
    shutdown_distributed()
    return metrics


if __name__ == '__main__':
    main()
