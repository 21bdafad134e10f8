# Mask2Former DiNAT-L (kernel 11), COCO instance segmentation, 100 epochs of large-scale jitter
# at 1024x1024 (published: 50.8 mask AP; 220M params, 522G MACs).
# MMDetection has no Swin-L instance config: this one is built on its Swin-S instance config
# (same head, LSJ pipeline, CocoMetric) with what the Swin-L panoptic config changes: 200
# queries, 16 GPUs x 1 image, 100 epochs; the backbone is replaced by DiNAT-L.
_base_ = [
    'mmdet::mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py',
    './_base_/mask2former_dinat_large.py',
    './_base_/nat_runtime.py',
]

custom_imports = dict(imports=['nat_mm', 'nat_mm.launch.hooks'], allow_failed_imports=False)
custom_hooks = {{_base_.nat_custom_hooks}}

model = dict(
    backbone={{_base_.dinat_m2f_backbone}},
    panoptic_head=dict(num_queries=200, in_channels={{_base_.dinat_m2f_in_channels}}))

optim_wrapper = {{_base_.dinat_m2f_optim_wrapper}}

train_dataloader = dict(batch_size=1)  # 16 GPUs x 1 image

# 100 epochs: 737.5k iterations of 16 images, lr x 0.1 at 655,556 and 710,184, evaluation
# every 5000 iterations and at the end (the schedule of MMDetection's Swin-L panoptic config).
max_iters = 737500
val_interval = 5000
param_scheduler = dict(end=max_iters, milestones=[655556, 710184])
train_cfg = dict(
    max_iters=max_iters,
    val_interval=val_interval,
    dynamic_intervals=[(max_iters // val_interval * val_interval + 1, max_iters)])
