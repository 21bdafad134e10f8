"""Shared by the tests of tools/: tiny generated datasets, demo options, training logs.
(Loading a tool: the ``load_tool`` and ``tool_path`` fixtures of tests/conftest.py.)"""
import re
from pathlib import Path

import pytest

from nat_mm.datasets import generate_ade20k_like, generate_coco_like


@pytest.fixture(scope='session')
def tiny_ade(tmp_path_factory):
    """4 training and 2 validation 64x64 images in the ADE20K layout."""
    return generate_ade20k_like(tmp_path_factory.mktemp('tiny_ade'), num_train=4, num_val=2,
                                image_size=(64, 64))


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
    """4 training and 2 validation 64x80 images in the COCO layout."""
    return generate_coco_like(tmp_path_factory.mktemp('tiny_coco'), num_train=4, num_val=2,
                              image_size=(64, 80))


@pytest.fixture(scope='session')
def seg_demo_options():
    """Function (data_root, max_iters) -> --cfg-options for a few iterations of
    configs/demo/upernet_nat_demo.py on ``data_root``."""
    return _seg_demo_options


def _seg_demo_options(data_root, max_iters):
    return [f'{split}_dataloader.dataset.data_root={data_root}'
            for split in ('train', 'val', 'test')] + [
        f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={max_iters}',
        'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1',
        'train_dataloader.batch_size=2']


#: "Iter(train) [3/4] ... loss: 1.51 ..." or "Epoch(train) [1][2/2] ... loss: 4.69 ..."
_TRAIN_LINE = re.compile(
    r'(?:Iter|Epoch)\(train\)\s*(?:\[\d+\])?\s*\[\s*(\d+)/\d+\].*?\sloss: (\S+)')


def _train_log(log_dir):
    """[(iteration, loss)] from the text log of the run that logged into ``log_dir``
    (the iteration within the epoch for epoch-based runs)."""
    text = next(Path(log_dir).glob('*.log')).read_text()
    return [(int(i), float(loss)) for i, loss in _TRAIN_LINE.findall(text)]


@pytest.fixture(scope='session')
def train_log():
    """Function: log dir -> [(iteration, loss)] logged in training."""
    return _train_log
