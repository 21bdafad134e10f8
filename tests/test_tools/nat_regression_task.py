"""A task for MMEngine's Runner around nat_mm's NAT backbone that needs neither mmdet nor
mmseg (tests/test_tools/test_crash_resume.py runs it through tools/train.py when the
demo segmentor's stack is not installed): regress the mean colour of random images.

Its randomness is that of the real configs: a random horizontal flip drawn from numpy in
the data pipeline, drop path and dropout drawn from torch's generator.
"""
import numpy as np
import torch
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from torch import nn


@DATASETS.register_module()
class RandomImages(torch.utils.data.Dataset):
    """``num`` images (3, size, size) from ``seed``, flipped at random when read."""

    def __init__(self, num=8, size=64, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(num, 3, size, size, generator=gen)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        if np.random.rand() < 0.5:
            image = image.flip(-1)
        return dict(inputs=image, targets=image.mean((1, 2)))


@MODELS.register_module()
class NATRegressor(BaseModel):
    """NAT, global average pooling of the last stage, dropout, a linear layer."""

    def __init__(self, backbone, dropout=0.1):
        super().__init__()
        self.backbone = MODELS.build(backbone)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.num_features[-1], 3)

    def forward(self, inputs, targets=None, mode='loss'):
        features = self.backbone(inputs)[-1].mean((2, 3))
        prediction = self.head(self.dropout(features))
        return dict(loss=(prediction - targets).square().mean())
