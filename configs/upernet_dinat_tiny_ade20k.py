# UperNet DiNAT-Tiny, ADE20K 160k, 512x512 (published: 47.8 mIoU single-scale).
# NAT-Tiny with the published per-layer dilations for 512x512 inputs.
_base_ = './upernet_nat_tiny_ade20k.py'

model = dict(
    backbone=dict(
        dilations=[[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4] * 3, [1, 2, 1, 2, 1]],
        init_cfg=dict(checkpoint='checkpoints/dinat_tiny_in1k_224.pth')))
