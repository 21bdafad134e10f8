# The official NAT / DiNAT ImageNet classifier as an MMPretrain model: NAT backbone with the
# last stage's output norm (the official final norm), average pooling, linear head. The variant
# configs set backbone.arch (and dilations, layer scale) and head.in_channels (8 x embed_dim).
#
# Weights: the whole classifier (head included) loads from an official .pth, a Hugging Face Hub
# folder or an MMEngine checkpoint of this model, with
#   python tools/test.py CONFIG CHECKPOINT                 (load_from, through ClassifierRunner)
#   model.init_cfg=dict(type='Pretrained', checkpoint=CHECKPOINT)
# (nat_mm/models/checkpoint/classifier.py; a detection / segmentation checkpoint or a head of
# another number of classes stops with what to do).
#
# Optimisation shared by the published recipes (the official classification configs, timm):
# AdamW with weight decay on weight matrices only (none on biases, norms, layer scales and
# relative position biases), gradients clipped to norm 5.0; MMPretrain's Swin AdamW schedule
# has the rest of it. The recipe bases in this folder set lr, schedules and batch sizes.
_base_ = [
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../../_base_/nat_runtime.py',
]

custom_imports = dict(
    imports=['nat_mm', 'nat_mm.launch.hooks', 'nat_mm.launch.classifier_runner'],
    allow_failed_imports=False)
runner_type = 'ClassifierRunner'
custom_hooks = {{_base_.nat_custom_hooks}}

model = dict(
    type='ImageClassifier',
    backbone=dict(type='NAT', arch='tiny', out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        # the official classifier's initialisation (timm: trunc_normal std 0.02, bias 0)
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    # the published recipe's Mixup 0.8 / CutMix 1.0 (one of the two per batch)
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

optim_wrapper = dict(
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(custom_keys={'_delete_': True, '.rpb': dict(decay_mult=0.0)}))
