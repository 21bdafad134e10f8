# UperNet DiNAT-Mini, ADE20K 160k, 512x512 (published: 45.8 / 47.2 mIoU single / multi-scale,
# 50M params, 900G MACs). NAT-Mini's recipe (drop path 0.2, no layer scale) with the published
# ADE20K dilations (the mini variant of 'seg', chosen by NAT from the depths).
_base_ = './upernet_nat_mini_ade20k.py'

model = dict(
    backbone=dict(
        dilations='seg',
        init_cfg=dict(checkpoint='checkpoints/dinat_mini_in1k_224.pth')))
