# Mask R-CNN DiNAT-Mini, COCO 3x (published: 47.2 box AP / 42.5 mask AP, 40M params, 225G MACs).
# NAT-Mini's recipe (drop path 0.2) with the COCO dilations (the mini variant of 'det', chosen
# by NAT from the depths).
_base_ = './mask_rcnn_nat_mini_coco.py'

model = dict(
    backbone=dict(
        dilations='det',
        init_cfg=dict(checkpoint='checkpoints/dinat_mini_in1k_224.pth')))
