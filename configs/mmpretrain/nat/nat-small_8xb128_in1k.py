# NAT-Small on ImageNet-1k (published top-1: docs/model_zoo.md).
_base_ = '../_base_/nat_in1k_300e.py'

model = dict(backbone=dict(arch='small'), head=dict(in_channels=768))
