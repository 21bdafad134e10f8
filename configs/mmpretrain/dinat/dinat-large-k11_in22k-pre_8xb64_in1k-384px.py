# DiNAT-L (ImageNet-22k pretrained) on ImageNet-1k at 384x384, kernel 11, fine-tuned from the
# kernel-11 ImageNet-22k weights (weights: dinat_large_in22k_in1k_384_11x11.pth; published
# top-1: docs/model_zoo.md).
_base_ = '../_base_/dinat_large_in22k_pre_in1k_384.py'

model = dict(
    backbone=dict(kernel_size=11),
    init_cfg=dict(checkpoint='checkpoints/dinat_large_in22k_224_11x11interp.pth'))
