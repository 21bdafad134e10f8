# ImageNet-1k training of NAT / DiNAT mini to base, as published (the official classification
# configs, a timm recipe): 8 GPUs x 128 images, AdamW lr 1e-3, weight decay 0.05, 20 warm-up
# epochs from 1e-6, cosine to 5e-6 by epoch 300 (per iteration), 10 cool-down epochs at 5e-6,
# fp16; RandAugment (m9, mstd 0.5, increasing), random erasing 0.25, Mixup / CutMix, label
# smoothing 0.1; test: resize the short edge to 256, centre crop 224, bicubic. MMPretrain's Swin
# ImageNet pipelines and AdamW schedule are that recipe (their lr is 5e-4 * 1024 / 512 = 1e-3);
# only the differences are set here. Another total batch: --auto-scale-lr (base 1024).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    './nat_classifier.py',
]

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = dict(batch_size=128)

optim_wrapper = dict(type='AmpOptimWrapper')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=5e-6, by_epoch=True, begin=20, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
