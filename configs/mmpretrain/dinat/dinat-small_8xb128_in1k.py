# DiNAT-Small on ImageNet-1k (published top-1: docs/model_zoo.md). Unlike NAT-Small it has no
# layer scale.
_base_ = '../_base_/nat_in1k_300e.py'

model = dict(
    backbone=dict(arch='small', dilations='224', layer_scale=False),
    head=dict(in_channels=768))
