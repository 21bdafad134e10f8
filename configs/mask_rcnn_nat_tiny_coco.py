# Mask R-CNN NAT-Tiny, COCO 3x (published: 47.7 box AP / 42.6 mask AP, 48M params).
_base_ = './_base_/mask_rcnn_nat_coco_3x.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/nat_tiny.pth')))
