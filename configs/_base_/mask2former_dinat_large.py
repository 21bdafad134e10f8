# The DiNAT-L backbone of the official Mask2Former runs and their optimiser, shared by the
# mask2former_dinat_large_* configs, which take them with
#   _base_ = ['mmdet::mask2former/...' (or 'mmseg::...'), './_base_/mask2former_dinat_large.py']
#   model = dict(backbone={{_base_.dinat_m2f_backbone}}, ...)
#   optim_wrapper = {{_base_.dinat_m2f_optim_wrapper}}
# (Every name here starts with dinat_m2f_: names of a _base_ file may not repeat those of the
# MMDetection / MMSegmentation configs beside it.)
dinat_m2f_depths = (3, 4, 18, 5)
dinat_m2f_backbone = dict(
    _delete_=True,
    type='NAT',
    arch='large',
    kernel_size=11,
    dilations='m2f',
    drop_path_rate=0.3,
    layer_scale=False,  # DiNAT-L has no layer scale
    out_indices=(0, 1, 2, 3),
    # The ImageNet-22k DiNAT-L weights, kernel 7, as the official configs name them: their
    # 13x13 relative position biases are resized (bicubic) to the 21x21 of kernel 11 on load,
    # and the log says so. Kernel-11 files load without a resize: the authors' resized
    # dinat_large_in22k_224_11x11interp.pth, and the Hub folder (or its pytorch_model.bin) of
    # shi-labs/dinat-large-11x11-in22k-in1k-384 (fine-tuned on ImageNet-1k at 384).
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_large_in22k_224.pth'))
dinat_m2f_in_channels = [192, 384, 768, 1536]

# AdamW lr 1e-4, weight decay 0.05, the backbone at 0.1x lr, gradients clipped to L2 norm 0.01
# (whole model), fp32 (no AMP in any official DiNAT-L run). No weight decay on norms, relative
# position biases and the query / level embeddings, as in the Swin Mask2Former configs.
# MMEngine matches the longest custom key contained in a parameter's name, so the per-block
# keys below win over 'backbone'.
dinat_m2f_backbone_no_decay = dict(lr_mult=0.1, decay_mult=0.0)
dinat_m2f_custom_keys = {
    'backbone': dict(lr_mult=0.1, decay_mult=1.0),
    'backbone.patch_embed.norm': dinat_m2f_backbone_no_decay,
    'backbone.norm': dinat_m2f_backbone_no_decay,  # the output norms norm0..norm3
    'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
    'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
    'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
}
dinat_m2f_custom_keys.update({
    f'backbone.levels.{level}.blocks.{block}.{name}': dinat_m2f_backbone_no_decay
    for level, depth in enumerate(dinat_m2f_depths) for block in range(depth)
    for name in ('norm', 'attn.rpb')
})
dinat_m2f_custom_keys.update({
    f'backbone.levels.{level}.downsample.norm': dinat_m2f_backbone_no_decay
    for level in range(len(dinat_m2f_depths) - 1)
})
dinat_m2f_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(custom_keys=dinat_m2f_custom_keys, norm_decay_mult=0.0))
