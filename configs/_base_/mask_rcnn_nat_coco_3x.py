# Mask R-CNN + NAT on COCO, 3x schedule (36 epochs): the published NAT / DiNAT recipe.
# Built on MMDetection's Mask R-CNN Swin-T 3x config, which has the same DETR-style multi-scale
# + random-crop augmentation, 36 epochs with steps at 27 and 33, AdamW and AMP.
#
# Total batch size 16 = 8 GPUs x 2 images (train_dataloader.batch_size is per GPU). With another
# total batch size, add --auto-scale-lr to tools/train.py: it scales lr = 1e-4 by
# (GPUs x batch_size) / auto_scale_lr.base_batch_size.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_amp-ms-crop-3x_coco.py',
    './nat_backbone.py',
    './nat_runtime.py',
]

custom_imports = dict(imports=['nat_mm', 'nat_mm.launch.hooks'], allow_failed_imports=False)
custom_hooks = {{_base_.nat_custom_hooks}}

model = dict(
    backbone={{_base_.nat_backbone}},
    neck=dict(in_channels=[64, 128, 256, 512]))

# AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 (as in the base config), without weight
# decay on relative position biases and norms; fp16 (AmpOptimWrapper, tools/train.py falls
# back to fp32 on machines without CUDA).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    paramwise_cfg=dict(
        _delete_=True, custom_keys={{_base_.nat_no_decay_keys}}))

# 500-iteration linear warm-up from lr * 0.001; lr x 0.1 after epochs 27 and 33.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1),
]

auto_scale_lr = dict(enable=False, base_batch_size=16)
