# The NAT backbone entry shared by the task bases in this folder, which take it with
#   _base_ = ['mmdet::...' or 'mmseg::...', './nat_backbone.py']
#   model = dict(backbone={{_base_.nat_backbone}}, ...)
# The variant configs in configs/ set arch, drop_path_rate and the pretrained file.
nat_backbone = dict(
    _delete_=True,
    type='NAT',
    arch='tiny',
    kernel_size=7,
    drop_path_rate=0.3,
    out_indices=(0, 1, 2, 3),
    # ImageNet-1k classification weights; train from scratch with
    # --cfg-options model.backbone.init_cfg=None
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/nat_tiny.pth'))

# The published recipes: no weight decay on relative position biases and norms.
nat_no_decay_keys = {
    'rpb': dict(decay_mult=0.),
    'norm': dict(decay_mult=0.),
}
