"""Dataset checks before the Runner (nat_mm.launch.datasets): paths the config expects
(check_dataset_paths) and damaged files (check_dataset_files)."""
import re
import shutil
from pathlib import Path

import pytest
from mmengine.config import Config

from nat_mm.datasets import dataloader_datasets, generate_ade20k_like, generate_coco_like
from nat_mm.launch import check_dataset_files, check_dataset_paths


def _seg_config(data_root):
    dataset = dict(type='ADE20KDataset', data_root=data_root,
                   data_prefix=dict(img_path='images/training',
                                    seg_map_path='annotations/training'))
    return Config(dict(default_scope='mmseg', train_dataloader=dict(dataset=dataset),
                       val_dataloader=dict(dataset=dict(dataset, data_prefix=dict(
                           img_path='images/validation',
                           seg_map_path='annotations/validation'))),
                       test_dataloader=None))


def _make_dirs(root, *names):
    for name in names:
        (root / name).mkdir(parents=True)


def test_complete_dataset_passes(tmp_path):
    _make_dirs(tmp_path, 'images/training', 'annotations/training', 'images/validation',
               'annotations/validation')
    check_dataset_paths(_seg_config(str(tmp_path)), mode='train')


def test_a_dataset_that_reads_no_files_passes():
    """E.g. one generated in memory: no data_root, ann_file or data_prefix."""
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='RandomImages', num=8))))
    check_dataset_paths(cfg, mode='train')


def test_missing_dataset_names_path_layout_and_fixes(tmp_path):
    root = tmp_path / 'ade' / 'ADEChallengeData2016'
    with pytest.raises(FileNotFoundError) as error:
        check_dataset_paths(_seg_config(str(root)), mode='train',
                            alternative='or run the demo: CALLER --demo')
    message = str(error.value)
    assert str(root) in message
    assert str(root / 'annotations' / 'validation') in message  # the layout
    assert 'data_prefix.seg_map_path' in message
    assert '--cfg-options train_dataloader.dataset.data_root=PATH' in message
    assert 'val_dataloader.dataset.data_root=PATH' in message
    assert message.endswith('\nor run the demo: CALLER --demo')


def test_partially_missing_dataset_lists_only_what_is_missing(tmp_path):
    _make_dirs(tmp_path, 'images/training', 'annotations/training', 'images/validation')
    with pytest.raises(FileNotFoundError) as error:
        check_dataset_paths(_seg_config(str(tmp_path)), mode='train')
    missing = str(error.value).split('Expected layout')[0]
    assert 'annotations/validation' in missing
    assert 'annotations/training' not in missing


def test_wrapped_datasets_and_coco_evaluator(tmp_path):
    dataset = dict(type='CocoDataset', data_root=str(tmp_path) + '/',
                   ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'))
    cfg = Config(dict(
        default_scope='mmdet',
        test_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dataset)),
        test_evaluator=dict(type='CocoMetric',
                            ann_file=str(tmp_path / 'annotations/instances_val2017.json'))))
    with pytest.raises(FileNotFoundError) as error:
        check_dataset_paths(cfg, mode='test')
    message = str(error.value)
    assert 'test_dataloader.dataset.dataset.data_root=PATH' in message
    assert 'test_evaluator.ann_file=PATH' in message
    assert 'tools/' not in message  # the package names no script that pip does not install
    _make_dirs(tmp_path, 'annotations', 'val2017')
    (tmp_path / 'annotations' / 'instances_val2017.json').write_text('{}')
    check_dataset_paths(cfg, mode='test')


def _imagenet_config(data_root):
    """MMPretrain's ImageNet configs name their folders by ``split``; CustomDataset takes a
    ``data_prefix`` string."""
    return Config(dict(default_scope='mmpretrain',
                       train_dataloader=dict(dataset=dict(type='ImageNet', data_root=data_root,
                                                          split='train')),
                       val_dataloader=dict(dataset=dict(type='CustomDataset',
                                                        data_root=data_root, data_prefix='val'))))


def test_imagenet_split_folders_are_expected(tmp_path):
    _make_dirs(tmp_path, 'train')
    with pytest.raises(FileNotFoundError) as error:
        check_dataset_paths(_imagenet_config(str(tmp_path)), mode='train')
    message = str(error.value)
    assert f'{tmp_path / "val"}  (val_dataloader.dataset)' in message
    assert str(tmp_path / 'train') not in message.split('Expected layout')[0]


def test_undecodable_imagenet_image_is_named(tmp_path):
    _make_dirs(tmp_path, 'train/n01440764', 'val/n01440764')
    damaged = tmp_path / 'train' / 'n01440764' / 'n01440764_10026.JPEG'
    damaged.write_bytes(b'<html>not found</html>')
    with pytest.raises(ValueError) as error:
        check_dataset_files(_imagenet_config(str(tmp_path)), mode='train')
    assert (f'{damaged}  (train_dataloader.dataset.data_prefix.img_path): not a JPEG image'
            in str(error.value))


def test_bad_mode():
    with pytest.raises(ValueError) as error:
        check_dataset_paths(Config(), mode='val')
    assert str(error.value) == "mode must be one of ['test', 'train'], got 'val'"


# Damaged files
@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    return Path(generate_ade20k_like(tmp_path_factory.mktemp('ade'), num_train=3, num_val=1,
                                     image_size=(32, 32)))


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return Path(generate_coco_like(tmp_path_factory.mktemp('coco'), num_train=3, num_val=1,
                                   image_size=(32, 32)))


def _generated_seg_config(root):
    return Config(dataloader_datasets(root, 'ade20k'))


def _generated_det_config(root):
    evaluator = dict(type='CocoMetric', ann_file=str(root / 'annotations/instances_val2017.json'))
    return Config(dict(dataloader_datasets(root, 'coco'), val_evaluator=evaluator))


def _copy(root, tmp_path):
    return Path(shutil.copytree(root, tmp_path / 'data'))


def test_good_datasets_pass(ade, coco):
    check_dataset_files(_generated_seg_config(ade), mode='train')
    check_dataset_files(_generated_det_config(coco), mode='train')


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep >= 0 else len(data) + keep])


@pytest.mark.parametrize('damage, name, expected', [
    (lambda p: _truncate(p, -300), 'images/training/*.jpg',
     r'JPEG image cut short: no end-of-image marker FF D9 at its end \(\d+ bytes\)'),
    (lambda p: _truncate(p, 0), 'annotations/training/*.png', r'empty file \(0 bytes\)'),
    (lambda p: p.write_text('<html>404 Not Found</html>'), 'images/validation/*.jpg',
     r"not a JPEG image: it starts with b'<html>4"),
    (lambda p: _truncate(p, 100), 'annotations/validation/*.png',
     r'PNG image cut short: no IEND chunk at its end \(100 bytes\)'),
])
def test_a_damaged_image_is_named_before_training(ade, tmp_path, damage, name, expected):
    root = _copy(ade, tmp_path)
    bad = sorted(root.glob(name))[0]
    damage(bad)
    with pytest.raises(ValueError) as error:
        check_dataset_files(_generated_seg_config(root), mode='train')
    message = str(error.value)
    assert message.startswith('1 damaged dataset file(s), found before training:')
    assert f'\n  {bad}  (' in message
    assert re.search(expected, message)
    assert 'Replace each with a good copy' in message


def test_an_annotation_file_that_does_not_parse_is_named(coco, tmp_path):
    root = _copy(coco, tmp_path)
    bad = root / 'annotations' / 'instances_train2017.json'
    _truncate(bad, -10)
    with pytest.raises(ValueError) as error:
        check_dataset_files(_generated_det_config(root), mode='train')
    message = str(error.value)
    assert f'{bad}  (train_dataloader.dataset.ann_file): not valid JSON: ' in message
    assert 'the file was cut short' in message
    assert message.endswith('\nReplace each with a good copy (download or extract the dataset '
                            'again, or rerun the script that made it), or remove it (an image '
                            'together with its annotation).')


def test_the_evaluator_annotation_file_is_checked_once(coco, tmp_path):
    root = _copy(coco, tmp_path)
    bad = root / 'annotations' / 'instances_val2017.json'
    bad.write_text('{"images": [}')
    with pytest.raises(ValueError) as error:
        check_dataset_files(_generated_det_config(root), mode='train')
    message = str(error.value)
    assert message.startswith('1 damaged dataset file(s)')   # val dataset and CocoMetric: one
    assert f'{bad}  (val_dataloader.dataset.ann_file): not valid JSON: Expecting value at line 1 ' \
        'column 13' in message


def test_many_damaged_files_are_counted(ade, tmp_path):
    root = _copy(ade, tmp_path)
    images = sorted(root.glob('images/*/*.jpg')) + sorted(root.glob('annotations/*/*.png'))
    for path in images:
        _truncate(path, 0)
    with pytest.raises(ValueError, match=f'^{len(images)} damaged dataset file'):
        check_dataset_files(_generated_seg_config(root), mode='train')
