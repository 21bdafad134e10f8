"""Draw a dataset's annotations on its images, as the model will see them (after the
config's pipeline): boxes, masks and labels of an MMDetection config, segmentation maps of
an MMSegmentation config.

Examples:
    python tools/analysis_tools/browse_dataset.py configs/demo/upernet_nat_demo.py \
        --output-dir work_dirs/browse --not-show
    python tools/analysis_tools/browse_dataset.py configs/mask_rcnn_nat_tiny_coco.py \
        --split val --max-images 20 --output-dir work_dirs/browse_coco --not-show
"""
import argparse
import importlib
import os.path as osp

import numpy as np
from mmengine.registry import DATASETS, VISUALIZERS
from PIL import Image

from nat_mm.cli.options import add_config_options
from nat_mm.utils import load_config

#: The config's ``default_scope`` -> the library whose datasets and visualizer it uses.
SCOPES = ('mmdet', 'mmseg')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='an MMDetection or MMSegmentation config')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='train',
                        help="whose dataloader's dataset and pipeline (default: train)")
    parser.add_argument('--output-dir', help='write the pictures into this folder')
    parser.add_argument('--not-show', action='store_true', help='do not open a window')
    parser.add_argument('--show-interval', type=float, default=2.,
                        help='seconds each picture is shown')
    parser.add_argument('--max-images', type=int, help='stop after this many images')
    add_config_options(parser)
    args = parser.parse_args(argv)
    if args.not_show and not args.output_dir:
        parser.error('--not-show without --output-dir would draw nothing anyone sees: give '
                     '--output-dir DIR, or leave out --not-show')
    if args.max_images is not None and args.max_images < 1:
        parser.error(f'--max-images must be >= 1, got {args.max_images}')
    return args


def build_dataset_and_visualizer(cfg, split):
    """The config's ``split`` dataset (its pipeline included) and its visualizer, built
    in the config's library (``default_scope``)."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'browse_dataset: default_scope {scope!r} is not one of {SCOPES}; '
                         'give an MMDetection or MMSegmentation config')
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=True)
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        raise ValueError(f'browse_dataset: the config has no {split}_dataloader')
    dataset = DATASETS.build(loader['dataset'])
    # a name of its own: the Runner's visualizer, if any, keeps the default one
    visualizer = VISUALIZERS.build(dict(cfg.visualizer, name=f'browse_dataset_{split}'))
    visualizer.dataset_meta = dataset.metainfo
    return dataset, visualizer


def annotation_size(sample):
    """(height, width) of the sample's masks or segmentation map, None for boxes alone."""
    if 'gt_sem_seg' in sample:
        return tuple(sample.gt_sem_seg.shape)
    masks = sample.get('gt_instances', {}).get('masks', None)
    return None if masks is None else (masks.height, masks.width)


def picture_to_draw_on(item):
    """The (H, W, 3) RGB image the annotations of ``item`` (a dataset item) fit.

    Training pipelines transform image and annotations together: the network's input.
    Test pipelines resize the image only (predictions are scaled back): then the original
    picture. mmdet's boxes become the plain tensor its visualizer draws.
    """
    sample = item['data_samples']
    boxes = sample.get('gt_instances', {}).get('bboxes', None)
    if hasattr(boxes, 'tensor'):
        sample.gt_instances.bboxes = boxes.tensor
    image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]       # CHW BGR -> HWC RGB
    size = annotation_size(sample)
    if size is not None and size != image.shape[:2]:
        image = np.asarray(Image.open(sample.img_path).convert('RGB'))
    return np.ascontiguousarray(image)


def main(argv=None):
    """Returns the paths of the pictures written (none without --output-dir)."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    dataset, visualizer = build_dataset_and_visualizer(cfg, args.split)
    count = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    written = []
    for index in range(count):
        item = dataset[index]
        sample = item['data_samples']
        image = picture_to_draw_on(item)
        name = osp.basename(sample.get('img_path') or f'{index:06d}.png')
        out_file = osp.join(args.output_dir, name) if args.output_dir else None
        visualizer.add_datasample(name, image.copy(), sample, draw_pred=False,
                                  show=not args.not_show, wait_time=args.show_interval,
                                  out_file=out_file)
        if out_file:
            written.append(out_file)
        print(f'{index + 1}/{count} {name}' + (f' -> {out_file}' if out_file else ''),
              flush=True)
    return written


if __name__ == '__main__':
    main()
