"""The synthetic ADE20K / COCO generators: formats, determinism, regeneration rules."""
import json

import numpy as np
import pytest
from PIL import Image

from nat_mm.datasets import (SEG_CLASSES, SHAPE_CLASSES, generate_ade20k_like,
                             generate_coco_like, render_scene)

SIZE = (48, 64)  # (height, width)


def _read(path):
    return np.asarray(Image.open(path))


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob('*') if p.is_file())


def test_ade20k_layout_and_labels(tmp_path):
    generate_ade20k_like(tmp_path, num_train=3, num_val=2, image_size=SIZE, seed=1)
    for split, prefix, count in (('training', 'ADE_train_', 3), ('validation', 'ADE_val_', 2)):
        images = sorted((tmp_path / 'images' / split).glob('*.jpg'))
        labels = sorted((tmp_path / 'annotations' / split).glob('*.png'))
        assert [p.stem for p in images] == [f'{prefix}{i:08d}' for i in range(1, count + 1)]
        assert [p.stem for p in labels] == [p.stem for p in images]
        for image_path, label_path in zip(images, labels):
            image, label = _read(image_path), _read(label_path)
            assert image.shape == SIZE + (3, ) and image.dtype == np.uint8
            assert label.shape == SIZE and label.dtype == np.uint8
            values = set(np.unique(label).tolist())
            # 0 outline (ignored), 1 background, 2.. shapes, at least one shape
            assert values <= set(range(len(SEG_CLASSES) + 1))
            assert {0, 1} <= values and max(values) >= 2


def test_shapes_are_coloured_by_class(tmp_path):
    """Shape pixels carry their class colour: the dominant channel identifies the class."""
    generate_ade20k_like(tmp_path, num_train=6, num_val=1, image_size=(96, 96), seed=3)
    dominant_channel = {2: 0, 3: 1, 4: 2}  # ellipse red, rectangle green, triangle blue
    checked = 0
    for label_path in (tmp_path / 'annotations' / 'training').glob('*.png'):
        label = _read(label_path)
        image = _read(str(label_path).replace('annotations', 'images').replace('.png', '.jpg'))
        for value, channel in dominant_channel.items():
            pixels = image[label == value].astype(float)
            if len(pixels) > 50:
                assert np.argmax(pixels.mean(axis=0)) == channel
                checked += 1
    assert checked > 0


def test_coco_annotations_match_the_drawn_pixels(tmp_path):
    from pycocotools.coco import COCO
    generate_coco_like(tmp_path, num_train=2, num_val=3, image_size=SIZE, seed=2)
    for split, count in (('train', 2), ('val', 3)):
        coco = COCO(str(tmp_path / 'annotations' / f'instances_{split}2017.json'))
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
        assert len(coco.getImgIds()) == count
        for image_info in coco.loadImgs(coco.getImgIds()):
            image = _read(tmp_path / f'{split}2017' / image_info['file_name'])
            assert image.shape == SIZE + (3, )
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_info['id']))
            assert annotations
            for annotation in annotations:
                mask = coco.annToMask(annotation).astype(bool)
                ys, xs = np.nonzero(mask)
                x, y, w, h = annotation['bbox']
                assert xs.min() >= np.floor(x) and xs.max() <= np.ceil(x + w)
                assert ys.min() >= np.floor(y) and ys.max() <= np.ceil(y + h)
                assert mask.sum() == pytest.approx(annotation['area'], rel=0.25)
                # the shape is drawn in its class colour, the background is greyish
                colour = image[mask].mean(axis=0)
                assert np.argmax(colour) == annotation['category_id'] - 1


def test_generation_is_deterministic(tmp_path):
    first, second, other = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    for root, seed in ((first, 0), (second, 0), (other, 1)):
        generate_coco_like(root, num_train=2, num_val=1, image_size=SIZE, seed=seed)
    files = _files(first)
    assert files == _files(second)
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / 'train2017' / '000000000001.jpg').read_bytes() != \
        (other / 'train2017' / '000000000001.jpg').read_bytes()


def test_complete_dataset_is_kept_and_other_arguments_replace_it(tmp_path):
    generate_ade20k_like(tmp_path, num_train=4, num_val=1, image_size=SIZE)
    label = tmp_path / 'annotations' / 'training' / 'ADE_train_00000001.png'
    mtime = label.stat().st_mtime_ns
    generate_ade20k_like(tmp_path, num_train=4, num_val=1, image_size=SIZE)
    assert label.stat().st_mtime_ns == mtime
    generate_ade20k_like(tmp_path, num_train=2, num_val=1, image_size=SIZE)
    # no stale images from the larger dataset are left behind
    assert len(list((tmp_path / 'images' / 'training').iterdir())) == 2
    marker = json.loads((tmp_path / '.nat_mm_synthetic.json').read_text())
    assert marker['num_train'] == 2


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / 'precious.txt').write_text('not a synthetic dataset')
    with pytest.raises(FileExistsError) as error:
        generate_coco_like(tmp_path, num_train=1, num_val=1, image_size=SIZE)
    assert str(error.value) == (f'{tmp_path} is not empty and holds no synthetic dataset; choose '
                                'an empty or new folder')
    assert (tmp_path / 'precious.txt').exists()


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_train=0), 'at least one'),
    (dict(image_size=(16, 64)), 'at least 32x32'),
    (dict(max_shapes=0), 'max_shapes'),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_ade20k_like(tmp_path, **kwargs)


def test_balanced_scenes_cycle_the_classes():
    totals = np.zeros(len(SHAPE_CLASSES), int)
    for index in range(96):
        _, shapes = render_scene(np.random.default_rng([0, index]), 128, 128, max_shapes=5,
                                 balanced=True)
        counts = np.bincount([shape.category for shape in shapes],
                             minlength=len(SHAPE_CLASSES))
        assert counts.max() - counts.min() <= 1, counts
        totals += counts
    assert totals.min() >= 0.9 * totals.mean(), totals
