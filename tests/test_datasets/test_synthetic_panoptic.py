"""The synthetic COCO-panoptic writer: PNG segment ids, JSON segments_info, same scenes as COCO."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

from synthetic_panoptic import (PANOPTIC_BACKGROUND_ID, generate_coco_panoptic_like,
                                segment_ids_to_rgb)

from nat_mm.datasets import SHAPE_CLASSES, generate_coco_like


def decode(png_path):
    """COCO panoptic encoding: id = R + 256 G + 256^2 B."""
    rgb = np.asarray(Image.open(png_path), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]


def test_segment_id_colours_round_trip():
    ids = np.array([[0, 1, 255], [256, PANOPTIC_BACKGROUND_ID, 256 ** 2 + 3]])
    rgb = segment_ids_to_rgb(ids)
    assert rgb.dtype == np.uint8
    rgb = rgb.astype(np.int64)
    decoded = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
    assert np.array_equal(decoded, ids)


def test_panoptic_layout_and_segments(tmp_path):
    root = Path(generate_coco_panoptic_like(tmp_path / 'pan', num_train=3, num_val=2,
                                            image_size=(48, 64), seed=3))
    instances = Path(generate_coco_like(tmp_path / 'inst', num_train=3, num_val=2,
                                        image_size=(48, 64), seed=3))
    for split, count in (('train', 3), ('val', 2)):
        panoptic = json.loads((root / 'annotations' / f'panoptic_{split}2017.json').read_text())
        coco = json.loads((instances / 'annotations' / f'instances_{split}2017.json').read_text())
        things = {c['id']: c['name'] for c in panoptic['categories'] if c['isthing']}
        stuff = {c['id']: c['name'] for c in panoptic['categories'] if not c['isthing']}
        assert tuple(things[i] for i in sorted(things)) == SHAPE_CLASSES
        assert list(stuff.values()) == ['background']
        assert len(panoptic['images']) == len(panoptic['annotations']) == count
        for image, annotation in zip(panoptic['images'], panoptic['annotations']):
            assert (root / f'{split}2017' / image['file_name']).is_file()
            assert annotation['image_id'] == image['id']
            ids = decode(root / 'annotations' / f'panoptic_{split}2017' / annotation['file_name'])
            assert ids.shape == (48, 64)
            segments = {s['id']: s for s in annotation['segments_info']}
            assert set(np.unique(ids)) == set(segments) | {0}          # 0: void outlines
            for segment_id, segment in segments.items():
                mask = ids == segment_id
                rows, cols = np.nonzero(mask)
                assert segment['area'] == mask.sum()
                assert segment['bbox'] == [cols.min(), rows.min(), cols.max() - cols.min() + 1,
                                           rows.max() - rows.min() + 1]
            assert segments[PANOPTIC_BACKGROUND_ID]['category_id'] in stuff
            # the scenes of generate_coco_like with the same seed: one thing segment per shape
            shapes = [a['category_id'] for a in coco['annotations']
                      if a['image_id'] == image['id']]
            assert [s['category_id'] for s in annotation['segments_info']
                    if s['id'] != PANOPTIC_BACKGROUND_ID] == shapes


def test_panoptic_generation_is_skipped_when_complete(tmp_path):
    root = tmp_path / 'pan'
    generate_coco_panoptic_like(root, num_train=1, num_val=1, image_size=(32, 32))
    png = root / 'annotations' / 'panoptic_val2017' / '000000000001.png'
    mtime = png.stat().st_mtime_ns
    generate_coco_panoptic_like(root, num_train=1, num_val=1, image_size=(32, 32))
    assert png.stat().st_mtime_ns == mtime
