"""Built-in demo: train and evaluate a NAT model on generated data, on a CPU, in minutes.

    python tools/demo.py --task seg    # UperNet NAT-Mini, synthetic data in the ADE20K layout
    python tools/demo.py --task det    # Mask R-CNN NAT-Mini, synthetic data in the COCO layout

Steps: generate the synthetic dataset of the demo config (once; kept for later runs), train
with MMEngine's Runner (its logger prints iteration, ETA and losses), evaluate with the real
metric (IoUMetric / CocoMetric), draw predictions next to the ground truth for a few
validation images, and print a summary with the metric, checkpoint and picture paths.
"""
import argparse
import os.path as osp
import time

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner
from PIL import Image, ImageDraw

from nat_mm.cli.options import add_config_options
from nat_mm.datasets import generate_demo_data
from nat_mm.launch import adapt_config_to_device
from nat_mm.utils import load_config

REPO_ROOT = osp.join(osp.dirname(osp.abspath(__file__)), '..')
DEMO_CONFIGS = {
    'seg': osp.join(REPO_ROOT, 'configs', 'demo', 'upernet_nat_demo.py'),
    'det': osp.join(REPO_ROOT, 'configs', 'demo', 'mask_rcnn_nat_demo.py'),
}
#: ``default_scope`` -> the ``--task`` that trains the same kind of model.
TASK_BY_SCOPE = {'mmseg': 'seg', 'mmdet': 'det'}
#: Metrics shown in the summary, in the names the evaluators report them.
SUMMARY_METRICS = {
    'seg': ('mIoU', 'mAcc', 'aAcc'),
    'det': ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'),
}
#: Predicted instances drawn in the det picture.
SCORE_THRESHOLD = 0.5
#: Panels of the picture are enlarged by this factor (nearest neighbour).
PICTURE_SCALE = 2


def demo_command(scope):
    """The line tools/train.py and tools/test.py add to a missing-dataset error: this
    demo, which makes its own data; None for a scope it has no model of (mmpretrain)."""
    if scope == 'mmpretrain':
        return None
    task = TASK_BY_SCOPE.get(scope, 'seg|det')
    return f'or run the built-in demo on generated data: python tools/demo.py --task {task}'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train and evaluate a NAT model on '
                                     'generated data (CPU demo)')
    parser.add_argument('--task', choices=sorted(DEMO_CONFIGS), default='seg',
                        help='seg: UperNet on ADE20K-style data; det: Mask R-CNN on '
                        'COCO-style data')
    parser.add_argument('--work-dir', help='logs, checkpoint and picture (default: '
                        'work_dirs/demo_<task>)')
    parser.add_argument('--data-root', help='where the synthetic dataset is (or will be) '
                        'written (default: the config\'s, data/demo_ade or data/demo_coco)')
    parser.add_argument('--num-pictures', type=int, default=4,
                        help='validation images drawn in the picture')
    parser.add_argument('--seed', type=int,
                        help='training seed (initialisation, augmentation, drop path); '
                        'default: the config\'s randomness.seed. The dataset stays the same.')
    add_config_options(parser, example='train_cfg.max_iters=50')
    return parser.parse_args(argv)


def set_data_root(cfg, data_root):
    """Point every dataloader (and a COCO evaluator's annotation file) at ``data_root``."""
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = data_root
        evaluator = cfg.get(f'{split}_evaluator')
        if evaluator and evaluator.get('ann_file'):
            evaluator.ann_file = osp.join(data_root, 'annotations',
                                          osp.basename(evaluator.ann_file))


def build_config(args):
    cfg = load_config(DEMO_CONFIGS[args.task], args.cfg_options)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.seed is not None:
        cfg.randomness = dict(cfg.get('randomness', {}), seed=args.seed)
    cfg.work_dir = args.work_dir or osp.join('work_dirs', f'demo_{args.task}')
    adapt_config_to_device(cfg)
    return cfg


def _colour_lookup(palette):
    """(256, 3) uint8 table: class index -> colour; other values (e.g. 255 ignore) black."""
    lookup = np.zeros((256, 3), np.uint8)
    lookup[:len(palette)] = np.asarray(palette, np.uint8)
    return lookup


def _seg_panels(image, sample, palette):
    lookup = _colour_lookup(palette)
    ground_truth = sample.gt_sem_seg.data[0].numpy().astype(np.uint8)
    prediction = sample.pred_sem_seg.data[0].numpy().astype(np.uint8)
    return [('image', image), ('ground truth', lookup[ground_truth]),
            ('prediction', lookup[prediction])]


def _draw_instances(image, masks, labels, boxes, palette):
    """Image (H, W, 3) with each mask tinted in its class colour and its box outlined."""
    canvas = image.astype(np.float32)
    for mask, label in zip(masks, labels):
        canvas[mask] = 0.45 * canvas[mask] + 0.55 * np.asarray(palette[label], np.float32)
    drawn = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(drawn)
    for box, label in zip(boxes, labels):
        draw.rectangle([float(v) for v in box], outline=tuple(palette[label]))
    return np.asarray(drawn)


def _det_panels(image, sample, palette):
    truth = sample.gt_instances
    predicted = sample.pred_instances[sample.pred_instances.scores >= SCORE_THRESHOLD]
    gt_masks = truth.masks.to_ndarray().astype(bool)
    return [
        ('ground truth', _draw_instances(image, gt_masks, truth.labels.tolist(),
                                         truth.bboxes.tolist(), palette)),
        (f'prediction (score >= {SCORE_THRESHOLD})',
         _draw_instances(image, predicted.masks.numpy().astype(bool),
                         predicted.labels.tolist(), predicted.bboxes.tolist(), palette)),
    ]


def save_prediction_picture(runner, task, path, num_images):
    """Draw predictions next to the ground truth for the first validation images.

    Returns:
        ``path``, a PNG with one row per image.
    """
    dataset = runner.val_dataloader.dataset
    palette = [tuple(colour) for colour in dataset.metainfo['palette']]
    make_panels = _seg_panels if task == 'seg' else _det_panels
    model = runner.model
    model.eval()
    rows = []
    with torch.no_grad():
        for index in range(min(num_images, len(dataset))):
            sample = model.test_step(pseudo_collate([dataset[index]]))[0]
            image = np.asarray(Image.open(sample.img_path).convert('RGB'))
            panels = make_panels(image, sample, palette)
            rows.append(np.concatenate([panel for _, panel in panels], axis=1))
            titles = [title for title, _ in panels]
    grid = np.concatenate(rows, axis=0)
    grid = grid.repeat(PICTURE_SCALE, axis=0).repeat(PICTURE_SCALE, axis=1)
    header_height = 14
    picture = Image.new('RGB', (grid.shape[1], grid.shape[0] + header_height), 'white')
    picture.paste(Image.fromarray(grid), (0, header_height))
    draw = ImageDraw.Draw(picture)
    panel_width = grid.shape[1] // len(titles)
    for column, title in enumerate(titles):
        draw.text((column * panel_width + 4, 1), title, fill='black')
    picture.save(path)
    return path


def last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as file:
        return file.read().strip()


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    start = time.time()
    data_root = generate_demo_data(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()  # the config validates once, at the end of training
    metrics = {
        name: runner.message_hub.get_scalar(f'val/{name}').current()
        for name in SUMMARY_METRICS[args.task]
        if f'val/{name}' in runner.message_hub.log_scalars
    }
    picture = save_prediction_picture(runner, args.task, osp.join(
        runner.log_dir, f'demo_{args.task}_predictions.png'), args.num_pictures)
    checkpoint = last_checkpoint(runner.work_dir)
    lines = [
        f'demo ({args.task}) finished in {time.time() - start:.0f} s',
        f'  data:        {data_root}',
        '  metrics:     ' + ', '.join(f'{name} {value:.4g}' for name, value in metrics.items()),
        f'  checkpoint:  {checkpoint}',
        f'  picture:     {picture}',
        f'  evaluate:    python tools/test.py {osp.relpath(DEMO_CONFIGS[args.task])} {checkpoint}',
    ]
    runner.logger.info('\n'.join(lines))
    return dict(metrics=metrics, checkpoint=checkpoint, picture=picture)


if __name__ == '__main__':
    main()
