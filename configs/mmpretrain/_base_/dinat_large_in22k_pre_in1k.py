# ImageNet-1k fine-tuning of the ImageNet-22k DiNAT-L, as published (the official
# dinat_large.yml): 8 GPUs x 64 images (the batch size of MMPretrain's Swin ImageNet data
# configs, which the variant configs add), AdamW lr 5e-5, weight decay 1e-4, no warm-up, lr
# decaying linearly to 0 over 30 epochs (per iteration), fp32, no Mixup / CutMix (label
# smoothing 0.1), drop path 0.35.
# The ImageNet-22k weights load with their final norm and without their 21841-class head
# (Pretrained with head=False); the 1000-class head starts from scratch.
_base_ = ['./nat_classifier.py']

model = dict(
    backbone=dict(arch='large', dilations='224', drop_path_rate=0.35),
    head=dict(in_channels=1536),
    train_cfg=dict(_delete_=True),
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_large_in22k_224.pth',
                  head=False))

optim_wrapper = dict(optimizer=dict(lr=5e-5, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=True, begin=0, end=30,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=30)
auto_scale_lr = dict(base_batch_size=512)
