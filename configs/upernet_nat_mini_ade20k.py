# UperNet NAT-Mini, ADE20K 160k, 512x512 (published: 45.1 mIoU single-scale, 50M params).
_base_ = './_base_/upernet_nat_ade20k_160k.py'

model = dict(
    backbone=dict(
        arch='mini',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/nat_mini.pth')))
