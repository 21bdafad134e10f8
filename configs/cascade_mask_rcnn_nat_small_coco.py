# Cascade Mask R-CNN NAT-Small, COCO 3x (published: 52.0 box AP / 44.9 mask AP, 108M params).
_base_ = './_base_/cascade_mask_rcnn_nat_coco_3x.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/nat_small.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
