# UperNet NAT-Small, ADE20K 160k, 512x512 (published: 48.0 mIoU single-scale, 82M params).
_base_ = './_base_/upernet_nat_ade20k_160k.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/nat_small.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
