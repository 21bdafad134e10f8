# Cascade Mask R-CNN DiNAT-Base, COCO 3x (published: 53.4 box AP / 46.2 mask AP, 147M params,
# 931G MACs). The COCO dilations, drop path 0.6 and lr 7.5e-5 (NAT-Base: 0.5 and 1e-4).
_base_ = './cascade_mask_rcnn_nat_base_coco.py'

model = dict(
    backbone=dict(
        dilations='det',
        drop_path_rate=0.6,
        layer_scale=1e-5,  # DiNAT-Base is the one DiNAT with layer scale, as NAT-Base
        init_cfg=dict(checkpoint='checkpoints/dinat_base_in1k_224.pth')))

optim_wrapper = dict(optimizer=dict(lr=7.5e-5))
