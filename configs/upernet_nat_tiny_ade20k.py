# UperNet NAT-Tiny, ADE20K 160k, 512x512 (published: 47.1 mIoU single-scale, 58M params).
_base_ = './_base_/upernet_nat_ade20k_160k.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/nat_tiny.pth')))
