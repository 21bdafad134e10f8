# DiNAT-L (ImageNet-22k pretrained) on ImageNet-1k at 224x224, kernel 7
# (weights: dinat_large_in22k_in1k_224.pth; published top-1: docs/model_zoo.md).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/dinat_large_in22k_pre_in1k.py',
]
