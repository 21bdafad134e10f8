# Demo: Mask R-CNN NAT-Mini trained from scratch on a small synthetic dataset in the COCO
# layout, on a CPU (python tools/demo.py --task det).
# It inherits the real config and shrinks only what a CPU run needs: ~160x128 images, narrow
# neck and heads, a few epochs, no pretrained file, fp32, a small validation set.
_base_ = '../mask_rcnn_nat_mini_coco.py'

# Arguments of nat_mm.datasets.generate_coco_like (tools/demo.py, tools/misc/make_demo_data.py).
demo_data = dict(num_train=64, num_val=16, image_size=(128, 160), max_shapes=5, seed=0)
data_root = 'data/demo_coco/'
metainfo = dict(
    classes=('ellipse', 'rectangle', 'triangle'),
    palette=[(220, 60, 60), (60, 190, 80), (70, 90, 230)])
num_classes = 3
channels = 64
max_epochs = 8

model = dict(
    backbone=dict(drop_path_rate=0.1, init_cfg=None),
    neck=dict(out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(in_channels=channels, conv_out_channels=channels,
                       num_classes=num_classes)))

# The published multi-scale training at 1/6 of the COCO sizes (without the crop branch:
# the synthetic images are already small).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize',
         scales=[(224, 112), (224, 128), (224, 144)],
         keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=3e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[max_epochs - 2, max_epochs - 1], gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs))
randomness = dict(seed=0)
