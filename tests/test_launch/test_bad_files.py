"""Damaged files found before training: dataset files (check_dataset_files) and
checkpoints a resumed run would load (resolve_resume_checkpoint)."""
import re
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from nat_mm.datasets import dataloader_datasets, generate_ade20k_like, generate_coco_like
from nat_mm.launch import check_dataset_files, resolve_resume_checkpoint
from nat_mm.launch.preflight import checkpoint_damage, complete_checkpoints


@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    return Path(generate_ade20k_like(tmp_path_factory.mktemp('ade'), num_train=3, num_val=1,
                                     image_size=(32, 32)))


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return Path(generate_coco_like(tmp_path_factory.mktemp('coco'), num_train=3, num_val=1,
                                   image_size=(32, 32)))


def _seg_config(root):
    return Config(dataloader_datasets(root, 'ade20k'))


def _det_config(root):
    evaluator = dict(type='CocoMetric', ann_file=str(root / 'annotations/instances_val2017.json'))
    return Config(dict(dataloader_datasets(root, 'coco'), val_evaluator=evaluator))


def _copy(root, tmp_path):
    return Path(shutil.copytree(root, tmp_path / 'data'))


def test_good_datasets_pass(ade, coco):
    check_dataset_files(_seg_config(ade), mode='train')
    check_dataset_files(_det_config(coco), mode='train')


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
        check_dataset_files(_seg_config(root), mode='train')
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
        check_dataset_files(_det_config(root), mode='train')
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
        check_dataset_files(_det_config(root), mode='train')
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
        check_dataset_files(_seg_config(root), mode='train')


# Checkpoints: real torch.save files, cut where a kill during the write leaves them.

def _save(path, step):
    torch.save(dict(meta=dict(iter=step), state_dict=dict(w=torch.full((64, 64), float(step)))),
               path)


@pytest.fixture
def work_dir(tmp_path):
    """iter_2.pth, iter_4.pth, last_checkpoint -> iter_4.pth (as MMEngine writes them)."""
    for step in (2, 4):
        _save(tmp_path / f'iter_{step}.pth', step)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    return tmp_path


#: Where a kill during torch.save can cut a checkpoint: bytes kept (negative: from the end).
CUTS = [0, 1, 1000, 0.5, -22, -1]


def _cut(path, cut):
    size = path.stat().st_size
    _truncate(path, int(size * cut) if isinstance(cut, float) else cut)


@pytest.mark.parametrize('cut', CUTS)
def test_a_cut_checkpoint_is_damaged_and_would_crash_torch_load(work_dir, cut):
    path = work_dir / 'iter_4.pth'
    assert checkpoint_damage(str(path)) is None
    _cut(path, cut)
    assert checkpoint_damage(str(path)) is not None
    with pytest.raises(Exception):          # what resuming from it would do without the check
        torch.load(path, weights_only=True)


@pytest.mark.parametrize('cut', CUTS)
def test_auto_resume_falls_back_to_the_latest_complete_checkpoint(work_dir, cut, logged):
    _cut(work_dir / 'iter_4.pth', cut)
    damage = checkpoint_damage(str(work_dir / 'iter_4.pth'))
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(work_dir)))
    assert resolve_resume_checkpoint(cfg) == str(work_dir / 'iter_2.pth')
    assert cfg.load_from == str(work_dir / 'iter_2.pth')
    assert logged == [
        f'--resume: the latest checkpoint {work_dir / "iter_4.pth"} (named by '
        f'{work_dir / "last_checkpoint"}) is damaged: {damage}; resuming from the latest '
        f'complete checkpoint {work_dir / "iter_2.pth"} instead.']


@pytest.mark.parametrize('pointer, problem', [
    ('', 'last_checkpoint is empty'),
    ('missing.pth', 'names missing.pth, which does not exist'),
    (None, 'there is no '),
])
def test_auto_resume_with_a_bad_pointer_uses_the_latest_complete_checkpoint(
        work_dir, pointer, problem, logged):
    if pointer is None:
        (work_dir / 'last_checkpoint').unlink()
    else:
        (work_dir / 'last_checkpoint').write_text(pointer)
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(work_dir)))
    assert resolve_resume_checkpoint(cfg) == str(work_dir / 'iter_4.pth')
    assert len(logged) == 1 and problem in logged[0]


def test_auto_resume_from_a_complete_latest_checkpoint_changes_nothing(work_dir):
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(work_dir)))
    assert resolve_resume_checkpoint(cfg) == str(work_dir / 'iter_4.pth')
    assert cfg.load_from is None                  # MMEngine reads the same pointer


def test_auto_resume_without_a_complete_checkpoint_stops(work_dir):
    for step in (2, 4):
        _cut(work_dir / f'iter_{step}.pth', 0.5)
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(work_dir)))
    with pytest.raises(ValueError) as error:
        resolve_resume_checkpoint(cfg)
    assert f'the latest checkpoint {work_dir / "iter_4.pth"} (named by ' in str(error.value)
    assert str(error.value).endswith(
        f'and {work_dir} holds no complete checkpoint to resume from instead. Train without '
        '--resume (or delete the damaged file and the pointer first).')


def test_auto_resume_of_a_new_work_dir_starts_from_scratch(tmp_path):
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(tmp_path)))
    assert resolve_resume_checkpoint(cfg) is None


@pytest.mark.parametrize('cut', CUTS)
def test_an_explicit_damaged_checkpoint_stops_naming_it_and_the_good_one(work_dir, cut):
    _cut(work_dir / 'iter_4.pth', cut)
    cfg = Config(dict(resume=True, load_from=str(work_dir / 'iter_4.pth'), work_dir='x'))
    with pytest.raises(ValueError) as error:
        resolve_resume_checkpoint(cfg)
    message = str(error.value)
    assert message.startswith(f'--resume: checkpoint {work_dir / "iter_4.pth"} is damaged: it ')
    assert message.endswith(f'--resume {work_dir / "iter_2.pth"}.')


def test_complete_checkpoints_are_ordered_by_step(work_dir):
    _save(work_dir / 'iter_10.pth', 10)
    (work_dir / 'iter_12.pth').write_bytes(b'')
    assert complete_checkpoints(str(work_dir)) == [
        str(work_dir / f'iter_{step}.pth') for step in (10, 4, 2)]
