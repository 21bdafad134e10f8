# UperNet NAT-Base, ADE20K 160k, 512x512 (published: 48.5 mIoU single-scale, 123M params).
_base_ = './_base_/upernet_nat_ade20k_160k.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/nat_base.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
