# Mask R-CNN DiNAT-Small, COCO 3x (published: 49.3 box AP / 44.0 mask AP, 70M params, 330G MACs).
# NAT-Small's recipe (drop path 0.35) with the COCO dilations.
_base_ = './mask_rcnn_nat_small_coco.py'

model = dict(
    backbone=dict(
        dilations='det',
        layer_scale=False,  # DiNAT-Small has no layer scale (NAT-Small has 1e-5)
        init_cfg=dict(checkpoint='checkpoints/dinat_small_in1k_224.pth')))
