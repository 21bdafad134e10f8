# Mask R-CNN NAT-Small, COCO 3x (published: 48.4 box AP / 43.2 mask AP, 70M params).
_base_ = './_base_/mask_rcnn_nat_coco_3x.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.35,
        init_cfg=dict(checkpoint='checkpoints/nat_small.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
