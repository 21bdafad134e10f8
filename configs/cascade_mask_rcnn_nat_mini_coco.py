# Cascade Mask R-CNN NAT-Mini, COCO 3x (published: 50.3 box AP / 43.6 mask AP, 77M params).
_base_ = './_base_/cascade_mask_rcnn_nat_coco_3x.py'

model = dict(
    backbone=dict(
        arch='mini',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/nat_mini.pth')))
