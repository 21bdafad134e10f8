"""The MMPretrain classification configs through the tools: tools/train.py trains a narrow
classifier a few iterations on a tiny ImageNet-layout dataset made here and evaluates top-1 /
top-5; tools/test.py evaluates the saved MMEngine checkpoint and the same weights written as
an official classifier file; demo/image_demo.py (MMPretrain's ImageClassificationInferencer)
predicts the same classes; the dataset check names an undecodable image before training."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / 'configs' / 'mmpretrain' / 'nat' / 'nat-mini_8xb128_in1k.py'
#: Folder names = classes (MMPretrain's CustomDataset sorts them: label i = CLASSES[i]).
CLASSES = ('amber', 'blue', 'cyan', 'green', 'magenta', 'red')
COLOURS = ((230, 150, 20), (30, 40, 220), (30, 210, 220), (40, 200, 40), (210, 40, 200),
           (220, 30, 30))
IMAGE_SIZE = 32


def write_image(path, colour, rng):
    noise = rng.integers(-25, 26, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format='JPEG', quality=95)


@pytest.fixture(scope='module')
def tiny_imagenet(tmp_path_factory):
    """ImageNet's folder layout, one folder per class: train/<class>/*.JPEG (3 per class),
    val/<class>/*.JPEG (2 per class); 32x32 images of a noisy class colour."""
    root = tmp_path_factory.mktemp('tiny_imagenet')
    rng = np.random.default_rng(0)
    for split, count in (('train', 3), ('val', 2)):
        for name, colour in zip(CLASSES, COLOURS):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                write_image(root / split / name / f'{name}_{index}.JPEG', colour, rng)
    return root


def tiny_config(tmp_path, data_root):
    """The shipped NAT-Mini config with a narrow NAT (its kernel and recipe kept), 6 classes,
    32x32 images and the tiny dataset (MMPretrain's CustomDataset: classes from folders)."""
    def dataset(split, pipeline):
        return dict(_delete_=True, type='CustomDataset', data_root=str(data_root),
                    data_prefix=split, pipeline=pipeline)

    train_pipeline = [dict(type='LoadImageFromFile'),
                      dict(type='RandomResizedCrop', scale=IMAGE_SIZE, backend='pillow',
                           interpolation='bicubic'),
                      dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                      dict(type='PackInputs')]
    test_pipeline = [dict(type='LoadImageFromFile'),
                     dict(type='ResizeEdge', scale=IMAGE_SIZE, edge='short', backend='pillow',
                          interpolation='bicubic'),
                     dict(type='PackInputs')]
    text = f'''
_base_ = {str(CONFIG)!r}
model = dict(
    backbone=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), mlp_ratio=2.,
                  drop_path_rate=0.),
    head=dict(num_classes={len(CLASSES)}, in_channels=128))
data_preprocessor = dict(num_classes={len(CLASSES)})
train_dataloader = dict(batch_size=6, num_workers=0, persistent_workers=False,
                        dataset={dataset('train', train_pipeline)!r})
val_dataloader = dict(batch_size=6, num_workers=0, persistent_workers=False,
                      dataset={dataset('val', test_pipeline)!r})
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1))
optim_wrapper = dict(optimizer=dict(lr=1e-3))
'''
    path = tmp_path / 'nat_tiny_classifier.py'
    path.write_text(text)
    return path


def load_demo():
    spec = importlib.util.spec_from_file_location('image_demo',
                                                  REPO_ROOT / 'demo' / 'image_demo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def val_images(data_root):
    """[(path, label)] of the validation images."""
    return [(str(path), label) for label, name in enumerate(CLASSES)
            for path in sorted((data_root / 'val' / name).iterdir())]


def official_layout(state_dict):
    """An MMPretrain classifier's weights under the official classifier's names."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith('head.fc.'):
            renamed['head.' + key[len('head.fc.'):]] = value
        elif key.startswith('backbone.norm3.'):
            renamed['norm.' + key[len('backbone.norm3.'):]] = value
        elif key.startswith('backbone.'):
            renamed[key[len('backbone.'):]] = value
    return renamed


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_imagenet, load_tool):
    """Two epochs of tools/train.py (with validation): (config, work dir, runner)."""
    tmp_path = tmp_path_factory.mktemp('classifier_run')
    config = tiny_config(tmp_path, tiny_imagenet)
    runner = load_tool('train').main([str(config), '--work-dir', str(tmp_path / 'work')])
    return config, tmp_path / 'work', runner


def test_training_evaluates_top1_and_top5(trained, train_log):
    _, work_dir, runner = trained
    assert runner.iter == 6 and (work_dir / "epoch_2.pth").is_file()  # 2 epochs of 3 batches
    log_dir = sorted(p for p in work_dir.iterdir() if p.is_dir())[-1]
    losses = [loss for _, loss in train_log(log_dir)]
    assert len(losses) == 6 and all(np.isfinite(losses))
    scalars = (log_dir / 'vis_data' / 'scalars.json').read_text()
    assert '"accuracy/top1"' in scalars and '"accuracy/top5"' in scalars


def _accuracy(scores, labels, k):
    """Percent of rows whose label is among the k best scores (ties counted as the sort
    leaves them)."""
    best = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    return 100.0 * np.mean([label in row for row, label in zip(best, labels)])


def test_test_tool_and_inferencer_agree_on_the_checkpoint_and_the_official_file(
        trained, tiny_imagenet, load_tool, tmp_path):
    """tools/test.py's top-1 / top-5 on the MMEngine checkpoint equal the accuracy computed
    here from the inferencer's scores (demo/image_demo.py); the same weights under the official
    classifier's names (an official .pth) give the same numbers through load_from."""
    config, work_dir, _ = trained
    checkpoint = work_dir / 'epoch_2.pth'
    test = load_tool('test')
    metrics = test.main([str(config), str(checkpoint), '--work-dir', str(tmp_path / 'test')])

    images = val_images(tiny_imagenet)
    inferencer = load_demo().build_inferencer(str(config), str(checkpoint))
    results = inferencer([path for path, _ in images])
    scores = np.stack([result['pred_scores'] for result in results])
    labels = [label for _, label in images]
    assert metrics['accuracy/top1'] == pytest.approx(_accuracy(scores, labels, 1), abs=1e-4)
    assert metrics['accuracy/top5'] == pytest.approx(_accuracy(scores, labels, 5), abs=1e-4)
    assert inferencer.classes == CLASSES  # the dataset's classes, kept in the checkpoint

    saved = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']
    official = tmp_path / 'official.pth'
    torch.save(official_layout(saved), official)
    again = test.main([str(config), str(official), '--work-dir', str(tmp_path / 'test2')])
    assert again == pytest.approx(metrics)


def test_image_demo_prints_the_best_classes(trained, tiny_imagenet, capsys):
    config, work_dir, _ = trained
    path, _ = val_images(tiny_imagenet)[0]
    load_demo().main([path, str(config), '--checkpoint', str(work_dir / 'epoch_2.pth'),
                      '--topk', '3'])
    out = capsys.readouterr().out  # after MMPretrain's progress bar
    assert f'{path}: ' in out
    ranking = out.split(f'{path}: ', 1)[1].splitlines()[0].split(', ')
    assert len(ranking) == 3 and all(item.split()[0] in CLASSES for item in ranking)
    scores = [float(item.split()[1]) for item in ranking]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-4


def test_undecodable_image_is_named_before_training(tiny_imagenet, tmp_path, load_tool):
    """The dataset check reads MMPretrain's data_prefix / split folders too."""
    import shutil
    data_root = tmp_path / 'data'
    shutil.copytree(tiny_imagenet, data_root)
    damaged = data_root / 'train' / 'red' / 'red_1.JPEG'
    damaged.write_bytes(damaged.read_bytes()[:200])  # cut short
    config = tiny_config(tmp_path, data_root)
    train = load_tool('train')
    with pytest.raises(ValueError) as error:
        train.main([str(config), '--work-dir', str(tmp_path / 'work')])
    message = str(error.value)
    assert f'{damaged}  (train_dataloader.dataset.data_prefix.img_path): JPEG image cut short' \
        in message
    assert not (tmp_path / 'work').exists() or not any((tmp_path / 'work').rglob('*.pth'))


def test_test_tool_keeps_and_draws_the_predictions(trained, tiny_imagenet, load_tool, tmp_path):
    """--out: MMEngine's DumpResults pickle, one prediction per image; --show-dir: MMPretrain's
    VisualizationHook draws each image."""
    import pickle
    config, work_dir, _ = trained
    out = tmp_path / 'predictions.pkl'
    load_tool('test').main([str(config), str(work_dir / 'epoch_2.pth'), '--work-dir',
                            str(tmp_path / 'test'), '--out', str(out), '--show-dir',
                            str(tmp_path / 'shown')])
    with open(out, 'rb') as file:
        predictions = pickle.load(file)
    images = val_images(tiny_imagenet)
    assert sorted(p['img_path'] for p in predictions) == sorted(path for path, _ in images)
    assert all(p['pred_score'].shape == (len(CLASSES), ) for p in predictions)
    assert len(list((tmp_path / 'shown').rglob('*.png'))) == len(images)
    with pytest.raises(ValueError, match='--out must be a .pkl or .pickle file'):
        load_tool('test').main([str(config), str(work_dir / 'epoch_2.pth'), '--out', 'x.json'])
