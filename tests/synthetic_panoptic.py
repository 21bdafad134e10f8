"""A synthetic COCO-panoptic dataset for the tests of the Mask2Former panoptic configs:
the scenes of :func:`nat_mm.datasets.generate_coco_like`, written as panoptic PNGs and
``segments_info``."""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from nat_mm.datasets.synthetic import SHAPE_CLASSES, render_scene, scene_rng, write_once

#: Category of the panoptic "stuff" segment (everything that is not a shape).
PANOPTIC_STUFF_CLASSES = ('background', )
#: Segment id of the background in every panoptic PNG; shape ``k`` (0-based) has id ``k + 1``.
PANOPTIC_BACKGROUND_ID = 1000


def panoptic_segment_ids(shapes, height, width):
    """COCO-panoptic segment ids (H, W) int64 of a scene.

    Shape ``k`` of ``shapes`` is segment ``k + 1``, the background
    :data:`PANOPTIC_BACKGROUND_ID`; the 1-pixel outline of each shape is 0
    (void, not part of any segment), as in :func:`semantic_label`.
    """
    ids = Image.new('I', (width, height), PANOPTIC_BACKGROUND_ID)
    draw = ImageDraw.Draw(ids)
    for index, shape in enumerate(shapes):
        vertices = [tuple(p) for p in shape.polygon]
        draw.polygon(vertices, fill=index + 1)
        draw.line(vertices + vertices[:1], fill=0, width=1)
    return np.asarray(ids, dtype=np.int64)


def segment_ids_to_rgb(ids):
    """COCO-panoptic PNG colours (H, W, 3) uint8 of segment ids: id = R + 256 G + 256^2 B."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2 % 256], axis=-1).astype(np.uint8)


def _bbox_of_mask(mask):
    rows, cols = np.nonzero(mask)
    return [int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1),
            int(rows.max() - rows.min() + 1)]


def _coco_panoptic_split(root, split, count, seed, image_size, max_shapes):
    height, width = image_size
    image_dir = Path(root) / f'{split}2017'
    png_dir = Path(root) / 'annotations' / f'panoptic_{split}2017'
    image_dir.mkdir(parents=True, exist_ok=True)
    png_dir.mkdir(parents=True, exist_ok=True)
    stuff_category = len(SHAPE_CLASSES) + 1
    images, annotations = [], []
    for index in range(count):
        image, shapes = render_scene(scene_rng(seed, split, index), height, width, max_shapes)
        image_id = index + 1
        stem = f'{image_id:012d}'
        Image.fromarray(image).save(image_dir / f'{stem}.jpg', quality=95)
        ids = panoptic_segment_ids(shapes, height, width)
        Image.fromarray(segment_ids_to_rgb(ids)).save(png_dir / f'{stem}.png')
        categories = [shape.category + 1 for shape in shapes] + [stuff_category]
        segments = []
        for segment_id, category_id in zip(list(range(1, len(shapes) + 1))
                                           + [PANOPTIC_BACKGROUND_ID], categories):
            mask = ids == segment_id
            if mask.any():
                segments.append(dict(id=segment_id, category_id=category_id,
                                     area=int(mask.sum()), bbox=_bbox_of_mask(mask), iscrowd=0))
        images.append(dict(id=image_id, file_name=f'{stem}.jpg', height=height, width=width))
        annotations.append(dict(image_id=image_id, file_name=f'{stem}.png',
                                segments_info=segments))
    categories = [dict(id=i + 1, name=name, supercategory='shape', isthing=1)
                  for i, name in enumerate(SHAPE_CLASSES)]
    categories += [dict(id=stuff_category + i, name=name, supercategory='stuff', isthing=0)
                   for i, name in enumerate(PANOPTIC_STUFF_CLASSES)]
    return dict(images=images, annotations=annotations, categories=categories)


def generate_coco_panoptic_like(root, num_train=64, num_val=16, image_size=(128, 128),
                                max_shapes=4, seed=0):
    """Write a synthetic panoptic-segmentation dataset in the COCO-panoptic layout under ``root``.

    ``{train,val}2017/*.jpg``, ``annotations/panoptic_{train,val}2017.json`` and
    the segment PNGs ``annotations/panoptic_{train,val}2017/*.png`` (colour
    R + 256 G + 256^2 B = segment id, 0 = void). Things: :data:`SHAPE_CLASSES`
    (category ids 1..3, one segment per shape); stuff:
    :data:`PANOPTIC_STUFF_CLASSES` (id 4, the rest of the image). The scenes are
    those of :func:`generate_coco_like` with the same seed. Same arguments and
    skip-if-complete behaviour as
    :func:`nat_mm.datasets.synthetic.generate_ade20k_like`.
    """
    arguments = dict(format='coco_panoptic', num_train=num_train, num_val=num_val,
                     image_size=image_size, max_shapes=max_shapes, seed=seed)

    def write(root):
        for split, count in (('train', num_train), ('val', num_val)):
            panoptic = _coco_panoptic_split(root, split, count, seed, image_size, max_shapes)
            with open(root / 'annotations' / f'panoptic_{split}2017.json', 'w') as file:
                json.dump(panoptic, file)

    return write_once(root, arguments, ('train2017', 'val2017', 'annotations'), write)
