# Cascade Mask R-CNN NAT-Base, COCO 3x (published: 52.3 box AP / 45.1 mask AP, 147M params).
_base_ = './_base_/cascade_mask_rcnn_nat_coco_3x.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/nat_base.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
