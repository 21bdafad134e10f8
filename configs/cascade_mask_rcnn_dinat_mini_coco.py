# Cascade Mask R-CNN DiNAT-Mini, COCO 3x (published: 51.2 box AP / 44.4 mask AP, 77M params,
# 704G MACs). NAT-Mini's recipe (drop path 0.2) with the COCO dilations (mini variant of 'det').
_base_ = './cascade_mask_rcnn_nat_mini_coco.py'

model = dict(
    backbone=dict(
        dilations='det',
        init_cfg=dict(checkpoint='checkpoints/dinat_mini_in1k_224.pth')))
