# Mask R-CNN DiNAT-Tiny, COCO 3x (published: 48.6 box AP / 43.5 mask AP).
# NAT-Tiny with the published per-layer dilations for COCO-sized inputs.
_base_ = './mask_rcnn_nat_tiny_coco.py'

model = dict(
    backbone=dict(
        dilations=[[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7] * 3, [1, 3, 1, 3, 1]],
        init_cfg=dict(checkpoint='checkpoints/dinat_tiny_in1k_224.pth')))
