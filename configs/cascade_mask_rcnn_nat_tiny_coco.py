# Cascade Mask R-CNN NAT-Tiny, COCO 3x (published: 51.4 box AP / 44.5 mask AP, 85M params).
_base_ = './_base_/cascade_mask_rcnn_nat_coco_3x.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/nat_tiny.pth')))
