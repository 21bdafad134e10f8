# UperNet DiNAT-Small, ADE20K 160k, 512x512 (published: 48.9 / 49.9 mIoU single / multi-scale,
# 82M params, 1010G MACs). NAT-Small's recipe (drop path 0.5) with the ADE20K dilations.
_base_ = './upernet_nat_small_ade20k.py'

model = dict(
    backbone=dict(
        dilations='seg',
        layer_scale=False,  # DiNAT-Small has no layer scale (NAT-Small has 1e-5)
        init_cfg=dict(checkpoint='checkpoints/dinat_small_in1k_224.pth')))
