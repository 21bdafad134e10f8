# UperNet DiNAT-Tiny, ADE20K 160k, 512x512 (published: 47.8 mIoU single-scale).
# NAT-Tiny with the published per-layer dilations for 512x512 inputs (preset 'seg').
_base_ = './upernet_nat_tiny_ade20k.py'

model = dict(
    backbone=dict(
        dilations='seg',
        init_cfg=dict(checkpoint='checkpoints/dinat_tiny_in1k_224.pth')))
