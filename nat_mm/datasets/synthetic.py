"""Small synthetic datasets in the real ADE20K and COCO formats.

They feed the built-in demo and the tests: the real dataset classes, data
pipelines and metrics of MMSegmentation / MMDetection read them unchanged.

Every image is a textured background (smooth colour noise plus stripes) with a
few non-overlapping shapes. Each shape class has its own outline and base
colour (jittered per shape), so a small model can learn them in minutes:

- ``ellipse``: reddish ellipse, ``rectangle``: greenish rotated rectangle,
  ``triangle``: bluish triangle.

Every shape is a polygon (an ellipse is drawn as a 24-gon), so the COCO
polygon annotations describe exactly the pixels that were drawn.

Layouts written:

- ADE20K: ``images/{training,validation}/ADE_*.jpg`` and
  ``annotations/{training,validation}/ADE_*.png``. Label values: 0 = unlabeled
  1-pixel outline around each shape (ADE20K's "other", ignored with
  ``reduce_zero_label=True``), 1 = background, 2.. = the shape classes, so the
  training classes are :data:`SEG_CLASSES`.
- COCO: ``{train,val}2017/*.jpg`` and
  ``annotations/instances_{train,val}2017.json`` (instances with polygon
  ``segmentation``, ``bbox``, ``area``, ``iscrowd``), classes
  :data:`SHAPE_CLASSES` with category ids 1..3.

Generation is deterministic: image ``i`` of a split depends only on
``(seed, split, i)`` and the size arguments.
"""
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ('ellipse', 'rectangle', 'triangle')
SHAPE_PALETTE = ((220, 60, 60), (60, 190, 80), (70, 90, 230))
SEG_CLASSES = ('background', ) + SHAPE_CLASSES
SEG_PALETTE = ((120, 120, 120), ) + SHAPE_PALETTE

#: Per-channel colour jitter of a shape around its class colour.
_COLOUR_JITTER = 35
#: Vertices of the polygon that draws an ellipse.
_ELLIPSE_VERTICES = 24
#: Written last; records the arguments so a complete dataset is not regenerated.
_MARKER = '.nat_mm_synthetic.json'


@dataclass
class Shape:
    """One object: ``category`` indexes :data:`SHAPE_CLASSES`; ``polygon`` is (N, 2) x, y."""
    category: int
    polygon: np.ndarray

    def bbox_xywh(self):
        x0, y0 = self.polygon.min(axis=0)
        x1, y1 = self.polygon.max(axis=0)
        return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]

    def area(self):
        """Polygon area by the shoelace formula."""
        x, y = self.polygon[:, 0], self.polygon[:, 1]
        return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _shape_polygon(rng, category, centre, radius):
    """Vertices (N, 2) of a shape of ``category`` inside the circle (centre, radius).

    The size ranges give the three classes about the same mean area (~1.3 radius^2).
    """
    rotation = rng.uniform(0, math.pi)
    if SHAPE_CLASSES[category] == 'ellipse':
        angles = np.linspace(0, 2 * math.pi, _ELLIPSE_VERTICES, endpoint=False)
        radii = radius * rng.uniform(0.5, 0.8, size=2)
        points = np.stack([radii[0] * np.cos(angles), radii[1] * np.sin(angles)], axis=1)
    elif SHAPE_CLASSES[category] == 'rectangle':
        half = radius * rng.uniform(0.45, 0.7, size=2)
        points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    else:
        angles = np.arange(3) * 2 * math.pi / 3 + rng.uniform(-0.35, 0.35, size=3)
        points = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    cos, sin = math.cos(rotation), math.sin(rotation)
    return points @ np.array([[cos, sin], [-sin, cos]]) + centre


def _sample_shapes(rng, height, width, max_shapes, balanced=False):
    """1..max_shapes shapes in non-overlapping circles inside the image.

    ``balanced``: the classes follow each other in a cycle from a random first one, so each
    image holds at most one shape more of one class than of another, instead of
    independent draws (which left seed 0's demo training set with 48 triangles against 78
    ellipses).
    """
    shapes, circles = [], []
    target = int(rng.integers(1, max_shapes + 1))
    first = int(rng.integers(len(SHAPE_CLASSES))) if balanced else None
    short_side = min(height, width)
    for _ in range(20 * target):
        if len(shapes) == target:
            break
        radius = rng.uniform(0.15, 0.3) * short_side
        centre = rng.uniform([radius + 1, radius + 1], [width - radius - 1, height - radius - 1])
        if any(np.hypot(*(centre - c)) < radius + r + 3 for c, r in circles):
            continue
        circles.append((centre, radius))
        if balanced:
            category = (first + len(shapes)) % len(SHAPE_CLASSES)
        else:
            category = int(rng.integers(len(SHAPE_CLASSES)))
        shapes.append(Shape(category, _shape_polygon(rng, category, centre, radius)))
    return shapes


def _background(rng, height, width):
    """Textured background (H, W, 3) float: greyish base, smooth colour noise, stripes."""
    base = rng.uniform(90, 170) + rng.uniform(-20, 20, size=3)
    coarse = rng.normal(0, 1, size=(6, 6, 3))
    smooth = np.stack([
        np.asarray(Image.fromarray(coarse[..., c].astype(np.float32)).resize(
            (width, height), Image.BILINEAR)) for c in range(3)
    ], axis=-1)
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 20)
    ys, xs = np.mgrid[0:height, 0:width]
    stripes = np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
    return base + 18 * smooth + 12 * stripes[..., None]


def render_scene(rng, height, width, max_shapes=4, balanced=False):
    """Draw one scene (``balanced``: see :func:`_sample_shapes`).

    Returns:
        (image, shapes): image (H, W, 3) uint8 RGB and the list of :class:`Shape`.
    """
    shapes = _sample_shapes(rng, height, width, max_shapes, balanced)
    canvas = Image.fromarray(np.clip(_background(rng, height, width), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:
        colour = np.array(SHAPE_PALETTE[shape.category]) + rng.integers(
            -_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
        draw.polygon([tuple(p) for p in shape.polygon],
                     fill=tuple(int(c) for c in np.clip(colour, 0, 255)))
    noise = rng.normal(0, 6, size=(height, width, 3))
    image = np.clip(np.asarray(canvas, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return image, shapes


def semantic_label(shapes, height, width):
    """ADE20K-style label map (H, W) uint8: 1 background, 2.. shapes, 0 on outlines."""
    label = Image.new('L', (width, height), 1)
    draw = ImageDraw.Draw(label)
    for shape in shapes:
        vertices = [tuple(p) for p in shape.polygon]
        draw.polygon(vertices, fill=shape.category + 2)
        draw.line(vertices + vertices[:1], fill=0, width=1)
    return np.asarray(label)


def scene_rng(seed, split, index):
    """The generator of image ``index`` of ``split``: the same scene for the same
    ``(seed, split, index)`` in every layout."""
    return np.random.default_rng([seed, sum(map(ord, split)), index])


def _prepare_root(root, arguments, generated_dirs):
    """True when ``root`` already holds this dataset; otherwise make it ready to write.

    A synthetic dataset generated with other arguments is removed first (the
    dataset classes list every file in a folder, so stale images would stay
    in it); a non-empty folder that is not a synthetic dataset is left alone.
    """
    root = Path(root)
    marker = root / _MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == arguments:
            return True
        marker.unlink()
        for name in generated_dirs:
            shutil.rmtree(root / name, ignore_errors=True)
    elif root.is_dir() and any(root.iterdir()):
        raise FileExistsError(f'{root} is not empty and holds no synthetic dataset; choose '
                              f'an empty or new folder')
    root.mkdir(parents=True, exist_ok=True)
    return False


def _mark_complete(root, arguments):
    (Path(root) / _MARKER).write_text(json.dumps(arguments, indent=1))


def _check_arguments(num_train, num_val, image_size, max_shapes):
    if num_train < 1 or num_val < 1:
        raise ValueError(f'need at least one training and one validation image, got '
                         f'num_train={num_train}, num_val={num_val}')
    height, width = image_size
    if min(height, width) < 32:
        raise ValueError(f'image_size must be at least 32x32, got {image_size}')
    if max_shapes < 1:
        raise ValueError(f'max_shapes must be >= 1, got {max_shapes}')


def write_once(root, arguments, generated_dirs, write):
    """Write a synthetic dataset under ``root`` with ``write(root)``, unless it is there.

    Does nothing when ``root`` already holds a complete dataset generated with
    the same ``arguments``; replaces a synthetic dataset generated with other
    arguments (removing ``generated_dirs``); refuses (FileExistsError) to write
    into another non-empty folder. The dataset counts as complete once ``write``
    has returned.

    Args:
        root: output folder.
        arguments (dict): what the dataset is generated from: ``format``,
            ``num_train``, ``num_val``, ``image_size`` (height, width),
            ``max_shapes``, and any other argument of the generator.
        generated_dirs: the folders ``write`` creates under ``root``.
        write: function(root) that writes the files.

    Returns:
        ``root`` as a string.
    """
    _check_arguments(arguments['num_train'], arguments['num_val'], arguments['image_size'],
                     arguments['max_shapes'])
    arguments = dict(arguments, image_size=list(arguments['image_size']))
    if not _prepare_root(root, arguments, generated_dirs):
        write(Path(root))
        _mark_complete(root, arguments)
    return str(root)


def generate_ade20k_like(root, num_train=64, num_val=16, image_size=(128, 128), max_shapes=4,
                         seed=0, balanced=True):
    """Write a synthetic dataset in the ADE20K layout under ``root``, once
    (:func:`write_once`).

    Args:
        root: output folder (the config's ``data_root``).
        num_train, num_val: images per split.
        image_size: (height, width).
        max_shapes: at most this many shapes per image (at least one).
        seed: random seed.
        balanced: cycle the shape classes within each image instead of drawing each
            independently, so every class gets about a third of the shapes (see
            :func:`_sample_shapes`).

    Returns:
        ``root`` as a string.
    """
    arguments = dict(format='ade20k', num_train=num_train, num_val=num_val,
                     image_size=image_size, max_shapes=max_shapes, seed=seed, balanced=balanced)
    height, width = image_size

    def write(root):
        for split, prefix, count in (('training', 'ADE_train_', num_train),
                                     ('validation', 'ADE_val_', num_val)):
            image_dir = root / 'images' / split
            label_dir = root / 'annotations' / split
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                image, shapes = render_scene(scene_rng(seed, split, index), height, width,
                                             max_shapes, balanced)
                stem = f'{prefix}{index + 1:08d}'
                Image.fromarray(image).save(image_dir / f'{stem}.jpg', quality=95)
                Image.fromarray(semantic_label(shapes, height, width)).save(
                    label_dir / f'{stem}.png')

    return write_once(root, arguments, ('images', 'annotations'), write)


def _coco_split(root, split, count, seed, image_size, max_shapes):
    height, width = image_size
    image_dir = Path(root) / f'{split}2017'
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, shapes = render_scene(scene_rng(seed, split, index), height, width, max_shapes)
        image_id = index + 1
        file_name = f'{image_id:012d}.jpg'
        Image.fromarray(image).save(image_dir / file_name, quality=95)
        images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
        for shape in shapes:
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id, category_id=shape.category + 1,
                     segmentation=[[round(float(v), 2) for v in shape.polygon.reshape(-1)]],
                     area=shape.area(), bbox=shape.bbox_xywh(), iscrowd=0))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(SHAPE_CLASSES)]
    return dict(images=images, annotations=annotations, categories=categories)


def generate_coco_like(root, num_train=64, num_val=16, image_size=(128, 128), max_shapes=4,
                       seed=0):
    """Write a synthetic instance-segmentation dataset in the COCO layout under ``root``.

    Same arguments and skip-if-complete behaviour as :func:`generate_ade20k_like`.
    """
    arguments = dict(format='coco', num_train=num_train, num_val=num_val,
                     image_size=image_size, max_shapes=max_shapes, seed=seed)

    def write(root):
        (root / 'annotations').mkdir(parents=True, exist_ok=True)
        for split, count in (('train', num_train), ('val', num_val)):
            coco = _coco_split(root, split, count, seed, image_size, max_shapes)
            with open(root / 'annotations' / f'instances_{split}2017.json', 'w') as file:
                json.dump(coco, file)

    return write_once(root, arguments, ('train2017', 'val2017', 'annotations'), write)


#: ``default_scope`` of a config -> generator of the dataset layout it reads.
GENERATOR_BY_SCOPE = {'mmseg': generate_ade20k_like, 'mmdet': generate_coco_like}


def generate_demo_data(cfg, root=None, **overrides):
    """Generate the dataset a demo config describes.

    Args:
        cfg (mmengine.Config): a config with a ``demo_data`` dict (the
            generator's keyword arguments) and ``default_scope`` mmseg or mmdet.
        root: output folder, default ``cfg.train_dataloader.dataset.data_root``.
        overrides: generator arguments replacing those of ``demo_data``
            (None values are ignored).

    Returns:
        The dataset folder.
    """
    if 'demo_data' not in cfg:
        raise ValueError('the config has no demo_data dict; use a config from configs/demo')
    if cfg.get('default_scope') not in GENERATOR_BY_SCOPE:
        raise ValueError(f'no synthetic dataset for default_scope {cfg.get("default_scope")!r}; '
                         f'expected one of {sorted(GENERATOR_BY_SCOPE)}')
    arguments = dict(cfg.demo_data)
    arguments.update({key: value for key, value in overrides.items() if value is not None})
    generate = GENERATOR_BY_SCOPE[cfg.default_scope]
    return generate(root or cfg.train_dataloader.dataset.data_root, **arguments)


def dataloader_datasets(root, layout):
    """The ``train_dataloader`` and ``val_dataloader`` entries of a config reading a dataset
    that :func:`generate_ade20k_like` (``layout='ade20k'``) or :func:`generate_coco_like`
    (``layout='coco'``) wrote at ``root``: MMSegmentation's ``BaseSegDataset`` or
    MMDetection's ``CocoDataset`` with the layout's folders, nothing else.

    Returns:
        dict(train_dataloader=dict(dataset=...), val_dataloader=dict(dataset=...)).
    """
    if layout == 'ade20k':
        def dataset(split):
            return dict(type='BaseSegDataset', data_root=str(root),
                        data_prefix=dict(img_path=f'images/{split}',
                                         seg_map_path=f'annotations/{split}'))
        splits = ('training', 'validation')
    elif layout == 'coco':
        def dataset(split):
            return dict(type='CocoDataset', data_root=str(root),
                        ann_file=f'annotations/instances_{split}2017.json',
                        data_prefix=dict(img=f'{split}2017/'))
        splits = ('train', 'val')
    else:
        raise ValueError(f"layout must be 'ade20k' or 'coco', got {layout!r}")
    return dict(train_dataloader=dict(dataset=dataset(splits[0])),
                val_dataloader=dict(dataset=dataset(splits[1])))
