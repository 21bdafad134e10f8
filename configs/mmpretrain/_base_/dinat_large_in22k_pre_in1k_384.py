# The 384x384 fine-tuning (the official dinat_large_384.yml): as at 224 but weight decay 1e-10,
# tested at 384x384 without a crop (crop_pct 1.0). MMPretrain's Swin 384 pipelines: test resizes
# to 384x384 (bicubic); train is RandomResizedCrop 384 + flip (the official run also had
# RandAugment and random erasing).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_384.py',
    './dinat_large_in22k_pre_in1k.py',
]

optim_wrapper = dict(optimizer=dict(weight_decay=1e-10))
