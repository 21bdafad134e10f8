# UperNet DiNAT-Large, ADE20K 160k, 640x640 (published: 54.0 / 54.9 mIoU single / multi-scale,
# 238M params, 2335G MACs), from the ImageNet-22k DiNAT-L weights, fp32 as published.
# The official "640x640" file overrides no crop and so inherits the 512 crop; its name, its
# MACs and its stage-1 dilation (7 x 20 = 140 > 128, the stride-4 size of a 512 crop) say 640,
# which is what this config trains: crop 640x640, images rescaled to (2560, 640).
_base_ = './_base_/upernet_nat_ade20k_160k.py'

crop_size = (640, 640)
scale = (2560, 640)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='large',
        drop_path_rate=0.3,
        dilations='seg_large',
        layer_scale=False,  # DiNAT-L has no layer scale
        init_cfg=dict(checkpoint='checkpoints/dinat_large_in22k_224.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))

# "No mixed precision with float16 in DiNAT-L" (official): plain fp32 OptimWrapper.
optim_wrapper = dict(type='OptimWrapper')

# The base pipelines at 640 instead of 512 (as MMSegmentation's ade20k_640x640 dataset config).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
