# Cascade Mask R-CNN DiNAT-Large, COCO 3x (published: 55.3 box AP / 47.8 mask AP, 258M params,
# 1276G MACs), from the ImageNet-22k DiNAT-L weights: the COCO dilations, drop path 0.6,
# lr 7.5e-5, fp32 as published.
_base_ = './_base_/cascade_mask_rcnn_nat_coco_3x.py'

model = dict(
    backbone=dict(
        arch='large',
        dilations='det',
        drop_path_rate=0.6,
        layer_scale=False,  # DiNAT-L has no layer scale
        init_cfg=dict(checkpoint='checkpoints/dinat_large_in22k_224.pth')),
    neck=dict(in_channels=[192, 384, 768, 1536]))

# "No mixed precision with float16 in DiNAT-L" (official): plain fp32 OptimWrapper.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=7.5e-5))
