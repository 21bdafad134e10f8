# Cascade Mask R-CNN DiNAT-Small, COCO 3x (published: 52.9 box AP / 45.8 mask AP, 108M params,
# 809G MACs). The COCO dilations, and drop path 0.5 (NAT-Small's Cascade config has 0.3).
_base_ = './cascade_mask_rcnn_nat_small_coco.py'

model = dict(
    backbone=dict(
        dilations='det',
        drop_path_rate=0.5,
        layer_scale=False,  # DiNAT-Small has no layer scale (NAT-Small has 1e-5)
        init_cfg=dict(checkpoint='checkpoints/dinat_small_in1k_224.pth')))
