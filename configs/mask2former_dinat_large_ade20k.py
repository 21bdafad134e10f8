# Mask2Former DiNAT-L (kernel 11), ADE20K semantic segmentation, 160k iterations at 640x640
# (published: 58.1 mIoU multi-scale; 220M params, 518G MACs).
# Built on MMSegmentation's Mask2Former Swin-L ADE20K 640x640 config of the same recipe: 160k
# iterations of 16 images (8 GPUs x 2), poly schedule, crop 640, 100 queries; the backbone is
# replaced by DiNAT-L.
_base_ = [
    'mmseg::mask2former/mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py',
    './_base_/mask2former_dinat_large.py',
    './_base_/nat_runtime.py',
]

# mmdet.models: MMSegmentation's Mask2FormerHead is built from MMDetection's modules.
custom_imports = dict(imports=['nat_mm', 'nat_mm.launch.hooks', 'mmdet.models'],
                      allow_failed_imports=False)
custom_hooks = {{_base_.nat_custom_hooks}}

model = dict(
    backbone={{_base_.dinat_m2f_backbone}},
    decode_head=dict(in_channels={{_base_.dinat_m2f_in_channels}}))

optim_wrapper = {{_base_.dinat_m2f_optim_wrapper}}
