"""Classify images with a NAT / DiNAT classifier through MMPretrain's ImageClassificationInferencer.

Usage (as MMPretrain's own demo/image_demo.py):
    python demo/image_demo.py IMAGE [IMAGE ...] CONFIG --checkpoint CHECKPOINT
        [--device cpu] [--topk 5] [--show-dir DIR]

    python demo/image_demo.py cat.jpg configs/mmpretrain/nat/nat-tiny_8xb128_in1k.py \\
        --checkpoint checkpoints/nat_tiny.pth

CHECKPOINT is the official classifier file, a Hugging Face Hub folder (shi-labs/nat-*,
shi-labs/dinat-*) or an MMEngine checkpoint of the classifier: it loads with the head
through nat_mm (MMPretrain's own loader would match no key of an official file). The class
names are the checkpoint's (MMEngine checkpoints keep them) or those of the config's test
dataset (ImageNet's for the shipped configs).
"""
import argparse
import sys

from nat_mm.models.checkpoint.classifier import load_classifier


def build_inferencer(config, checkpoint=None, device='cpu'):
    """MMPretrain's ImageClassificationInferencer on the config's model with ``checkpoint``."""
    from mmpretrain.apis import ImageClassificationInferencer, get_model
    model = get_model(config, pretrained=False, device=device)
    if checkpoint:
        _, file = load_classifier(model, checkpoint)
        dataset_meta = file.checkpoint.get('meta', {}).get('dataset_meta')
        if dataset_meta:
            model._dataset_meta = dataset_meta
    return ImageClassificationInferencer(model, device=device)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('config', help='an MMPretrain config (configs/mmpretrain/...)')
    parser.add_argument('--checkpoint', help='classifier checkpoint file or Hub folder '
                        '(none: random weights)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N] (default: cpu)')
    parser.add_argument('--topk', type=int, default=5, help='classes printed per image')
    parser.add_argument('--show-dir', help='save each image with its prediction drawn here')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    inferencer = build_inferencer(args.config, args.checkpoint, args.device)
    classes = inferencer.classes
    results = inferencer(args.images, show_dir=args.show_dir) if args.show_dir \
        else inferencer(args.images)
    for image, result in zip(args.images, results):
        scores = result['pred_scores']
        best = scores.argsort()[::-1][:args.topk]
        ranking = ', '.join(f'{classes[i] if classes else int(i)} {float(scores[i]):.4f}'
                            for i in best)
        print(f'{image}: {ranking}')
    return results


if __name__ == '__main__':
    main(sys.argv[1:])
