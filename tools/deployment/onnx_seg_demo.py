"""Segment an image with an exported segmentor, using ONNX Runtime, numpy and PIL only.

The file must come from tools/deployment/export_onnx.py with a segmentation
config: its metadata holds the preprocessing of the config's data
preprocessor (mean, std, channel order), the test resize scale, the
accepted input sizes, the classes and the palette, so no config (and no
torch, mmcv, mmseg) is needed here.

The image is resized as the config's test pipeline does (keep ratio, to fit
the test scale; a static export is fed exactly its export size), normalised,
segmented; the logits are resized back to the image size (bilinear) and the
arg-max labels written as a colour PNG (the dataset palette).

Example::

    python tools/deployment/onnx_seg_demo.py upernet_nat_tiny_ade20k.onnx demo.jpg --out seg.png
"""
import argparse
import json

import numpy as np
import onnxruntime as ort
from PIL import Image

METADATA_PREFIX = 'nat_mm.'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('model', help='.onnx file written by tools/deployment/export_onnx.py')
    parser.add_argument('image')
    parser.add_argument('--out', required=True, help='colour label PNG to write')
    parser.add_argument('--blend', type=float, default=0.,
                        help='opacity of the labels over the image (0: labels only)')
    return parser.parse_args(argv)


def read_metadata(session):
    props = session.get_modelmeta().custom_metadata_map
    meta = {key[len(METADATA_PREFIX):]: json.loads(value) for key, value in props.items()
            if key.startswith(METADATA_PREFIX)}
    if meta.get('task') != 'seg':
        raise ValueError(
            'this file has no nat_mm segmentation metadata: export a segmentation config '
            'with tools/deployment/export_onnx.py')
    return meta


def model_input_size(meta, height, width):
    """(H, W) the image is resized to before the model."""
    if not meta['dynamic']:
        return tuple(meta['input_shape'])
    if meta.get('test_scale'):
        # mmcv's keep-ratio rescale: fit the long side into max(scale), the short into min.
        long_edge, short_edge = max(meta['test_scale']), min(meta['test_scale'])
        factor = min(long_edge / max(height, width), short_edge / min(height, width))
        height, width = int(height * factor + 0.5), int(width * factor + 0.5)
    low, high = meta['min_size'], meta['max_size']
    return min(max(height, low), high), min(max(width, low), high)


def preprocess(image, meta, size):
    """PIL RGB image -> (1, 3, H, W) float32, as the data preprocessor."""
    array = np.asarray(image.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)
    # PIL gives RGB; mmseg loads BGR and flips it when bgr_to_rgb is set.
    if not meta['bgr_to_rgb']:
        array = array[..., ::-1]
    array = (array - np.asarray(meta['mean'], np.float32)) / np.asarray(meta['std'], np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def resize_logits(logits, height, width):
    """(C, h, w) -> (C, height, width), bilinear per class."""
    return np.stack([np.asarray(Image.fromarray(channel).resize((width, height), Image.BILINEAR))
                     for channel in logits.astype(np.float32)])


def palette(meta, num_classes):
    if meta.get('palette') and len(meta['palette']) >= num_classes:
        return np.asarray(meta['palette'], dtype=np.uint8)
    return np.random.default_rng(0).integers(0, 256, (num_classes, 3), dtype=np.uint8)


def main(argv=None):
    args = parse_args(argv)
    session = ort.InferenceSession(args.model, providers=['CPUExecutionProvider'])
    meta = read_metadata(session)
    image = Image.open(args.image).convert('RGB')
    size = model_input_size(meta, image.height, image.width)
    logits = session.run(None, {session.get_inputs()[0].name: preprocess(image, meta, size)})[0]
    labels = resize_logits(logits[0], image.height, image.width).argmax(0)
    colours = palette(meta, logits.shape[1])[labels]
    if args.blend:
        colours = (args.blend * colours + (1 - args.blend) * np.asarray(image)).astype(np.uint8)
    Image.fromarray(colours).save(args.out)
    classes = meta.get('classes') or [str(i) for i in range(logits.shape[1])]
    found, counts = np.unique(labels, return_counts=True)
    print(f'{args.image} ({image.width}x{image.height}, model input {size[1]}x{size[0]}) -> '
          f'{args.out}')
    for label, count in sorted(zip(found, counts), key=lambda item: -item[1]):
        print(f'  {classes[label]:<20} {100 * count / labels.size:5.1f}%')


if __name__ == '__main__':
    try:
        main()
    except ValueError as error:
        raise SystemExit(f'error: {error}')
