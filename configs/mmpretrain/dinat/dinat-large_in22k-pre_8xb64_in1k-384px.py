# DiNAT-L (ImageNet-22k pretrained) on ImageNet-1k at 384x384, kernel 7 with the 384 dilations
# (weights: dinat_large_in22k_in1k_384.pth; published top-1: docs/model_zoo.md).
_base_ = '../_base_/dinat_large_in22k_pre_in1k_384.py'

model = dict(backbone=dict(dilations='384'))
