# UperNet DiNAT-Base, ADE20K 160k, 512x512 (published: 49.6 / 50.4 mIoU single / multi-scale,
# 123M params, 1137G MACs). NAT-Base's recipe (drop path 0.5) with the ADE20K dilations.
_base_ = './upernet_nat_base_ade20k.py'

model = dict(
    backbone=dict(
        dilations='seg',
        layer_scale=1e-5,  # DiNAT-Base is the one DiNAT with layer scale, as NAT-Base
        init_cfg=dict(checkpoint='checkpoints/dinat_base_in1k_224.pth')))
