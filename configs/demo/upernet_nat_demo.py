# Demo: UperNet NAT-Mini trained from scratch on a small synthetic dataset in the ADE20K
# layout, on a CPU in minutes (python tools/demo.py --task seg).
# It inherits the real config and shrinks only what a CPU run needs: 128x128 crops, narrow
# heads, a few hundred iterations, no pretrained file, fp32, a small validation set.
_base_ = '../upernet_nat_mini_ade20k.py'

# Arguments of nat_mm.datasets.generate_ade20k_like (tools/demo.py, tools/misc/make_demo_data.py).
demo_data = dict(num_train=96, num_val=32, image_size=(128, 128), max_shapes=5, seed=0)
data_root = 'data/demo_ade'
# Label 0 of the synthetic maps is the unlabeled outline of each shape (ignored).
metainfo = dict(
    classes=('background', 'ellipse', 'rectangle', 'triangle'),
    palette=[[120, 120, 120], [220, 60, 60], [60, 190, 80], [70, 90, 230]])
num_classes = 4
crop_size = (128, 128)
max_iters = 400
warmup_iters = 20

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(drop_path_rate=0.1, init_cfg=None),
    decode_head=dict(channels=64, num_classes=num_classes),
    auxiliary_head=dict(channels=32, num_classes=num_classes))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, pipeline=train_pipeline, **dataset,
                 data_prefix=dict(img_path='images/training',
                                  seg_map_path='annotations/training')))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, pipeline=test_pipeline, **dataset,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation')))
test_dataloader = val_dataloader

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=warmup_iters, end=max_iters,
         by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)
