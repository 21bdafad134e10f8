# UperNet + NAT on ADE20K, 160k iterations at 512x512: the published NAT / DiNAT recipe.
# Built on MMSegmentation's UperNet-Swin config (same data pipeline, heads, schedule length);
# the variants in configs/ set arch, drop path rate and pretrained file.
#
# Total batch size 16 = 8 GPUs x 2 images (train_dataloader.batch_size is per GPU). With another
# total batch size B, scale the learning rate linearly: lr = 6e-5 * B / 16, e.g.
#   --cfg-options optim_wrapper.optimizer.lr=1.5e-05   (4 GPUs x 1 image)
# or let tools/train.py do it with --auto-scale-lr (uses auto_scale_lr below).
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    './nat_backbone.py',
    './nat_runtime.py',
]

custom_imports = dict(imports=['nat_mm', 'nat_mm.launch.hooks'], allow_failed_imports=False)
custom_hooks = {{_base_.nat_custom_hooks}}

model = dict(
    backbone={{_base_.nat_backbone}},
    decode_head=dict(in_channels=[64, 128, 256, 512], channels=512, num_classes=150),
    auxiliary_head=dict(in_channels=256, in_index=2, channels=256, num_classes=150))

# AdamW without weight decay on relative position biases and norms; fp16 as published
# (tools/train.py falls back to fp32 OptimWrapper on machines without CUDA).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={{_base_.nat_no_decay_keys}}))

# 1500-iteration linear warm-up from lr * 1e-6, then poly (power 1) decay to 0.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Multi-scale + flip testing (tools/test.py --tta): tta_model (SegTTAModel) and tta_pipeline come
# from MMSegmentation's bases with the published protocol, ratios 0.5, 0.75, 1.0, 1.25, 1.5, 1.75,
# each with and without a horizontal flip (tests/test_configs/test_configs.py checks them).
