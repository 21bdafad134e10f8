"""Train a detector or segmentor whose backbone is NAT / DiNAT.

One script for MMDetection and MMSegmentation configs: the config's
``default_scope`` (mmdet or mmseg) selects the registries the Runner uses.

Examples:
    python tools/train.py configs/upernet_nat_tiny_ade20k.py
    python tools/train.py configs/mask_rcnn_nat_tiny_coco.py --auto-scale-lr
    python tools/train.py CONFIG --resume                # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume work_dirs/x/iter_8000.pth
    bash tools/dist_train.sh CONFIG 8                    # 8 processes with torchrun
"""
import argparse
import logging

from demo import demo_command
from mmengine.logging import print_log

from nat_mm.cli.options import add_config_options, add_launcher_options, parse_launcher_args
from nat_mm.launch import (adapt_config_to_device, build_runner, check_dataset_files,
                           check_dataset_paths, init_distributed, load_run_config,
                           resolve_resume_checkpoint, shutdown_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a NAT detector or segmentor')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='folder for logs and checkpoints '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='PATH',
        help='resume from PATH, or without PATH from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training (AmpOptimWrapper; needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by (total batch size) / '
                        'auto_scale_lr.base_batch_size')
    add_config_options(parser)
    add_launcher_options(parser)
    return parse_launcher_args(parser, argv)


def enable_amp(cfg):
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        print_log('--amp: AMP is already enabled in the config.', logger='current',
                  level=logging.WARNING)
        return
    if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, the config has '
                         f'{cfg.optim_wrapper.type}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_auto_scale_lr(cfg):
    if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
        raise ValueError('--auto-scale-lr needs auto_scale_lr = dict(base_batch_size=...) in '
                         'the config')
    cfg.auto_scale_lr.enable = True


def build_config(args):
    """The config as the Runner will see it, after the command-line options."""
    cfg = load_run_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    adapt_config_to_device(cfg, args.launcher)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    resolve_resume_checkpoint(cfg)
    check_dataset_paths(cfg, mode='train', alternative=demo_command(cfg.get('default_scope')))
    check_dataset_files(cfg, mode='train')
    init_distributed(args.launcher)
    runner = build_runner(cfg)
    runner.train()
    shutdown_distributed()
    return runner


if __name__ == '__main__':
    main()
