# Mask2Former DiNAT-L (kernel 11), COCO panoptic, 100 epochs of large-scale jitter at 1024x1024
# (published: PQ 58.5, AP 49.2, mIoU 68.3; 220M params, 522G MACs).
# Built on MMDetection's Mask2Former Swin-L config of the same recipe: 100 epochs (737.5k
# iterations of 16 images = 16 GPUs x 1), LSJ 1024 (scale 0.1-2.0), 200 queries, 9+1 decoder
# layers, class / mask / dice loss weights 2 / 5 / 5 with no-object weight 0.1, 12544 points;
# the backbone is replaced by DiNAT-L.
# Evaluation (CocoPanopticMetric) needs panopticapi:
#   pip install git+https://github.com/cocodataset/panopticapi.git
_base_ = [
    'mmdet::mask2former/mask2former_swin-l-p4-w12-384-in21k_16xb1-lsj-100e_coco-panoptic.py',
    './_base_/mask2former_dinat_large.py',
    './_base_/nat_runtime.py',
]

custom_imports = dict(imports=['nat_mm', 'nat_mm.launch.hooks'], allow_failed_imports=False)
custom_hooks = {{_base_.nat_custom_hooks}}

model = dict(
    backbone={{_base_.dinat_m2f_backbone}},
    panoptic_head=dict(in_channels={{_base_.dinat_m2f_in_channels}}))

optim_wrapper = {{_base_.dinat_m2f_optim_wrapper}}
