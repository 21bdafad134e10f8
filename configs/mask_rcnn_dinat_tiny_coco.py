# Mask R-CNN DiNAT-Tiny, COCO 3x (published: 48.6 box AP / 43.5 mask AP).
# NAT-Tiny with the published per-layer dilations for COCO-sized inputs (preset 'det').
_base_ = './mask_rcnn_nat_tiny_coco.py'

model = dict(
    backbone=dict(
        dilations='det',
        init_cfg=dict(checkpoint='checkpoints/dinat_tiny_in1k_224.pth')))
