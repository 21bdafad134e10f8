# Mask R-CNN NAT-Mini, COCO 3x (published: 46.5 box AP / 41.7 mask AP, 40M params).
_base_ = './_base_/mask_rcnn_nat_coco_3x.py'

model = dict(
    backbone=dict(
        arch='mini',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/nat_mini.pth')))
