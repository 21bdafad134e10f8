# Cascade Mask R-CNN DiNAT-Tiny, COCO 3x (published: 52.2 box AP / 45.1 mask AP).
# NAT-Tiny with the published per-layer dilations for COCO-sized inputs (preset 'det').
_base_ = './cascade_mask_rcnn_nat_tiny_coco.py'

model = dict(
    backbone=dict(
        dilations='det',
        init_cfg=dict(checkpoint='checkpoints/dinat_tiny_in1k_224.pth')))
