"""Neighborhood Attention Transformer (NAT / DiNAT) as a dense-prediction backbone.

Module and parameter names follow the official classification checkpoints
(``patch_embed``, ``levels.{i}.blocks.{j}``, ``levels.{i}.downsample``), so the
published weights load after dropping the classification ``norm`` and
``head`` (see :mod:`nat_mm.models.checkpoint`). The detection/segmentation
backbone adds one output LayerNorm ``norm{i}`` per returned level.

Inside the network features are channels-last (B, H, W, C); the outputs are
NCHW.
"""
import inspect

import torch
from mmengine.model import BaseModule, initialize
from torch import nn
from torch.utils import checkpoint as activation_checkpoint

from ...ops import NeighborhoodAttention2D
from ...ops.gelu_linear import gelu_linear
from ..presets import ARCH_SETTINGS, resolve_dilations
from ..checkpoint.load import load_pretrained

_REQUIRED_ARCH_KEYS = ('embed_dim', 'depths', 'num_heads', 'mlp_ratio')
_OPTIONAL_ARCH_DEFAULTS = dict(drop_path_rate=0., layer_scale=None)
#: Keys of a ``dict(type='Pretrained', ...)`` init_cfg, passed to :func:`load_pretrained`.
_PRETRAINED_OPTIONS = ('checkpoint', 'prefix', 'map_location', 'strict')


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for whole samples.

    Kept samples are scaled by 1 / (1 - drop_prob) so the expectation is unchanged.
    Identity in eval mode.
    """

    def __init__(self, drop_prob=0.):
        super().__init__()
        if not 0. <= drop_prob < 1.:
            raise ValueError(f'DropPath: drop_prob must be in [0, 1), got {drop_prob!r}')
        self.drop_prob = drop_prob

    def extra_repr(self):
        return f'drop_prob={self.drop_prob:.3f}'

    def forward(self, x):
        if not self.training or self.drop_prob == 0.:
            return x
        keep_prob = 1. - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep_prob)
        return x * mask.div_(keep_prob)      # one pass over x


class ConvTokenizer(nn.Module):
    """Two stride-2 3x3 convolutions (stride 4 in total), then LayerNorm.

    Shape:
        input (B, in_channels, H, W); output (B, ceil(H/4), ceil(W/4), embed_dim).
    """

    def __init__(self, in_channels, embed_dim):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        # Channels-last convolutions: the output is wanted channels-last, and on
        # CPU the first convolution's backward is ~3x faster that way.
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        return self.norm(x.permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """Stride-2 3x3 convolution doubling the channels, then LayerNorm.

    Shape:
        input (B, H, W, C); output (B, ceil(H/2), ceil(W/2), 2C).
    """

    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        x = self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.norm(x)


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, on the last dimension.

    When gradients are recorded and no hidden dropout is active, GELU + fc2
    run as :func:`~nat_mm.ops.gelu_linear.gelu_linear`, which recomputes the
    GELU in the backward instead of keeping its output (same results, about a
    fifth less activation memory per block).
    """

    def __init__(self, dim, hidden_dim, drop=0.):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        hidden = self.fc1(x)
        if torch.is_grad_enabled() and not (self.training and self.drop.p > 0):
            return self.drop(gelu_linear(hidden, self.fc2.weight, self.fc2.bias))
        return self.drop(self.fc2(self.drop(self.act(hidden))))


class NATBlock(nn.Module):
    """Pre-norm transformer block with neighbourhood attention.

    ``x = x + drop_path(gamma1 * attn(norm1(x)))``, then the same with ``mlp``
    and ``gamma2``; the gammas exist only with layer scale.

    Shape:
        input and output (B, H, W, dim).
    """

    def __init__(self, dim, num_heads, kernel_size, dilation, mlp_ratio, qkv_bias, qk_scale,
                 drop, attn_drop, drop_path, layer_scale):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(
            dim, num_heads, kernel_size=kernel_size, dilation=dilation, qkv_bias=qkv_bias,
            qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.layer_scale = layer_scale
        if layer_scale is None:
            self.register_parameter('gamma1', None)
            self.register_parameter('gamma2', None)
        else:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x):
        attn = self.attn(self.norm1(x))
        if self.gamma1 is not None:
            attn = self.gamma1 * attn
        x = x + self.drop_path(attn)
        mlp = self.mlp(self.norm2(x))
        if self.gamma2 is not None:
            mlp = self.gamma2 * mlp
        return x + self.drop_path(mlp)


class NATLevel(nn.Module):
    """One resolution level: ``blocks`` then an optional ``downsample``.

    Returns:
        (features, next_input): the level's output before downsampling
        (B, H, W, C) and the input of the next level (B, H/2, W/2, 2C), or
        the same tensor twice when there is no downsample.
    """

    def __init__(self, dim, depth, num_heads, kernel_size, dilations, mlp_ratio, qkv_bias,
                 qk_scale, drop, attn_drop, drop_paths, layer_scale, downsample, with_cp):
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            NATBlock(dim, num_heads, kernel_size, dilations[j], mlp_ratio, qkv_bias, qk_scale,
                     drop, attn_drop, drop_paths[j], layer_scale)
            for j in range(depth))
        self.downsample = ConvDownsampler(dim) if downsample else None

    def forward(self, x):
        for block in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                x = activation_checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if self.downsample is None:
            return x, x
        return x, self.downsample(x)


def _resolve_arch(arch):
    """The settings dict of a named arch or a user-given arch dict."""
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise ValueError(
                f'NAT: unknown arch {arch!r}; valid archs are {sorted(ARCH_SETTINGS)} or a dict '
                f'with keys {list(_REQUIRED_ARCH_KEYS)} '
                f'(optional: {list(_OPTIONAL_ARCH_DEFAULTS)})')
        return dict(ARCH_SETTINGS[arch])
    if isinstance(arch, dict):
        missing = [key for key in _REQUIRED_ARCH_KEYS if key not in arch]
        unknown = sorted(set(arch) - set(_REQUIRED_ARCH_KEYS) - set(_OPTIONAL_ARCH_DEFAULTS))
        if missing or unknown:
            raise ValueError(
                f'NAT: an arch dict needs the keys {list(_REQUIRED_ARCH_KEYS)} and may have '
                f'{list(_OPTIONAL_ARCH_DEFAULTS)}; missing {missing}, unknown {unknown}')
        return {**_OPTIONAL_ARCH_DEFAULTS, **arch}
    raise ValueError(
        f'NAT: arch must be one of {sorted(ARCH_SETTINGS)} or a dict, got {type(arch).__name__}')


def _check_dilations(dilations, depths):
    """Per-layer dilations as a list of lists (all 1 when ``dilations`` is None)."""
    if dilations is None:
        return [[1] * depth for depth in depths]
    if not isinstance(dilations, (list, tuple)) or len(dilations) != len(depths):
        raise ValueError(
            f'NAT: dilations must be a list with one list per stage ({len(depths)} stages, '
            f'depths {list(depths)}), got {dilations!r}')
    for stage, (stage_dilations, depth) in enumerate(zip(dilations, depths)):
        if not isinstance(stage_dilations, (list, tuple)) or len(stage_dilations) != depth:
            length = len(stage_dilations) if isinstance(stage_dilations, (list, tuple)) else None
            raise ValueError(
                f'NAT: dilations[{stage}] must list one dilation per layer of stage {stage} '
                f'(depth {depth}), got length {length}: {stage_dilations!r}')
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                   for d in stage_dilations):
            raise ValueError(
                f'NAT: dilations[{stage}] must hold ints >= 1, got {stage_dilations!r}')
    return [list(stage_dilations) for stage_dilations in dilations]


#: Arguments of MMDetection's and MMSegmentation's ``SwinTransformer`` that NAT does not
#: have: seeing one means a NAT entry was merged into a Swin backbone dict of a base config.
SWIN_ONLY_ARGUMENTS = ('pretrain_img_size', 'embed_dims', 'patch_size', 'window_size',
                       'strides', 'patch_norm', 'use_abs_pos_embed', 'act_cfg', 'norm_cfg',
                       'pretrained', 'convert_weights')


def _reject_unknown_arguments(kwargs):
    """ValueError for keyword arguments NAT does not take, with the fix for the usual cause:
    ``type='NAT'`` written into a config whose base has a SwinTransformer backbone."""
    if not kwargs:
        return
    swin = [name for name in SWIN_ONLY_ARGUMENTS if name in kwargs]
    other = sorted(set(kwargs) - set(swin))
    message = f'NAT got arguments it does not have: {", ".join(swin + other)}.'
    if swin:
        message += (
            f' {", ".join(swin)} belong to SwinTransformer: the config merged NAT into the '
            "base config's Swin backbone dict. Add _delete_=True to the backbone dict, "
            "model=dict(backbone=dict(_delete_=True, type='NAT', arch='tiny', ...)), and set "
            "the in_channels of the neck (detection) or of the decode and auxiliary heads "
            "(segmentation) to NAT's widths, embed_dim * (1, 2, 4, 8) "
            '(mini, tiny: [64, 128, 256, 512]; small: [96, 192, 384, 768]; '
            'base: [128, 256, 512, 1024]).')
    else:
        accepted = [name for name in inspect.signature(NAT.__init__).parameters
                    if name not in ('self', 'kwargs')]
        message += f' Its arguments are: {", ".join(accepted)}.'
    raise ValueError(message)


class NAT(BaseModule):
    """Neighborhood Attention Transformer backbone (NAT; DiNAT with ``dilations``).

    Args:
        arch: 'mini' | 'tiny' | 'small' | 'base' | 'large' (published settings;
            'large' is DiNAT-L) or a dict
            with keys embed_dim, depths, num_heads, mlp_ratio and optionally
            drop_path_rate, layer_scale.
        embed_dim, depths, num_heads, mlp_ratio: override the arch's values.
        kernel_size: neighbourhood size K (odd, >= 3).
        dilations: None (all 1, i.e. NAT), one list per stage with one
            dilation per layer (DiNAT), or the name of a published set
            ('224', 'det', 'seg', 'seg_large', 'm2f'; see
            :mod:`nat_mm.models.presets`).
        qkv_bias: bias in the attention's qkv projection.
        qk_scale: attention logit scale, default head_dim ** -0.5.
        drop_rate: dropout after the attention projection and in the MLP.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth of the last block (rates grow
            linearly from 0 over all blocks); None uses the arch's ImageNet value.
        layer_scale: initial value of the per-channel branch scales gamma1/gamma2;
            None uses the arch's setting, 0 or False disables layer scale.
        in_channels: input image channels.
        out_indices: levels whose features are returned (each gets a LayerNorm
            ``norm{i}``).
        frozen_stages: -1 trains everything; k >= 0 freezes ``patch_embed`` and
            levels 0..k-1 (with their downsample and output norms), kept in eval mode.
        with_cp: activation checkpointing per block (saves memory, costs time).
        init_cfg: None (random init, see :meth:`init_weights`) or
            ``dict(type='Pretrained', checkpoint=PATH)`` for an official NAT
            classification checkpoint or a converted backbone checkpoint
            (optional keys: prefix, map_location, strict; see
            :func:`~nat_mm.models.checkpoint.load_pretrained`).
        kwargs: none is accepted; a ValueError names them (and, for
            SwinTransformer's arguments, gives the ``_delete_=True`` fix).

    Shape:
        input (B, in_channels, H, W) of any size; output a tuple with, for each
        index i in ``out_indices``, (B, embed_dim * 2**i, H_i, W_i) where H_i
        is H divided by 4 * 2**i rounded up (likewise W_i).
    """

    def __init__(self, arch='tiny', embed_dim=None, depths=None, num_heads=None, mlp_ratio=None,
                 kernel_size=7, dilations=None, qkv_bias=True, qk_scale=None, drop_rate=0.,
                 attn_drop_rate=0., drop_path_rate=None, layer_scale=None, in_channels=3,
                 out_indices=(0, 1, 2, 3), frozen_stages=-1, with_cp=False, init_cfg=None,
                 **kwargs):
        _reject_unknown_arguments(kwargs)
        super().__init__(init_cfg=init_cfg)
        settings = _resolve_arch(arch)
        overrides = dict(embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate,
                         layer_scale=layer_scale)
        settings.update({key: value for key, value in overrides.items() if value is not None})
        embed_dim = settings['embed_dim']
        depths = tuple(settings['depths'])
        num_heads = tuple(settings['num_heads'])
        layer_scale = settings['layer_scale'] or None
        drop_path_rate = settings['drop_path_rate']
        num_levels = len(depths)

        if len(num_heads) != num_levels:
            raise ValueError(
                f'NAT: depths {list(depths)} and num_heads {list(num_heads)} must have the same '
                'length (one entry per stage)')
        if embed_dim % 2:
            raise ValueError(f'NAT: embed_dim must be even, got {embed_dim}')
        if layer_scale is not None and layer_scale < 0:
            raise ValueError(f'NAT: layer_scale must be positive, 0 or None, got {layer_scale}')
        dilations = _check_dilations(resolve_dilations(dilations, depths), depths)
        if isinstance(out_indices, int) or not out_indices or any(
                not isinstance(i, int) or not 0 <= i < num_levels for i in out_indices) \
                or len(set(out_indices)) != len(out_indices):
            raise ValueError(
                f'NAT: out_indices must be a non-empty sequence of distinct stage indices in '
                f'0..{num_levels - 1}, got {out_indices!r}')
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= num_levels:
            raise ValueError(
                f'NAT: frozen_stages must be an int in -1..{num_levels} (-1: train all, k: freeze '
                f'the stem and the first k stages), got {frozen_stages!r}')

        self.arch_settings = dict(settings, depths=depths, num_heads=num_heads,
                                  layer_scale=layer_scale)
        self.kernel_size = kernel_size
        self.dilations = dilations
        self.out_indices = tuple(sorted(out_indices))
        self.frozen_stages = frozen_stages
        self.num_features = tuple(embed_dim * 2 ** i for i in range(num_levels))

        self.patch_embed = ConvTokenizer(in_channels, embed_dim)
        drop_paths = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.levels = nn.ModuleList()
        for i, depth in enumerate(depths):
            first_block = sum(depths[:i])
            self.levels.append(NATLevel(
                dim=self.num_features[i], depth=depth, num_heads=num_heads[i],
                kernel_size=kernel_size, dilations=dilations[i], mlp_ratio=settings['mlp_ratio'],
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_paths=drop_paths[first_block:first_block + depth],
                layer_scale=layer_scale, downsample=i < num_levels - 1, with_cp=with_cp))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))
        self._freeze_stages()

    def forward(self, x):
        """(B, in_channels, H, W) -> tuple of (B, C_i, H_i, W_i) for i in out_indices."""
        x = self.patch_embed(x)
        outs = []
        for i, level in enumerate(self.levels):
            features, x = level(x)
            if i in self.out_indices:
                features = getattr(self, f'norm{i}')(features)
                outs.append(features.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed]
        for i in range(self.frozen_stages):
            modules.append(self.levels[i])
            if i in self.out_indices:
                modules.append(getattr(self, f'norm{i}'))
        return modules

    def _freeze_stages(self):
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        """Set the mode, keeping frozen stages in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self

    def init_weights(self):
        """Initialise from scratch, then apply ``init_cfg``.

        From scratch: Linear weights and relative position biases
        trunc_normal(std=.02), Linear biases 0, LayerNorm weight 1 / bias 0,
        layer-scale gammas ``layer_scale``; convolutions keep PyTorch's default
        init (kaiming-uniform). A ``Pretrained`` init_cfg then loads and
        converts the checkpoint with
        :func:`nat_mm.models.checkpoint.load_pretrained`; other init_cfg
        entries are applied by MMEngine.
        """
        init_cfgs = self.init_cfg or []
        if isinstance(init_cfgs, dict):
            init_cfgs = [init_cfgs]
        pretrained = [cfg for cfg in init_cfgs if cfg.get('type') == 'Pretrained']
        others = [cfg for cfg in init_cfgs if cfg.get('type') != 'Pretrained']
        if len(pretrained) > 1:
            raise ValueError(f'NAT: init_cfg has {len(pretrained)} Pretrained entries; give one')
        self.apply(self._init_module_from_scratch)
        if others:
            initialize(self, others)
        if pretrained:
            options = {key: value for key, value in pretrained[0].items() if key != 'type'}
            unknown = sorted(set(options) - set(_PRETRAINED_OPTIONS))
            if 'checkpoint' not in options or unknown:
                raise ValueError(
                    f"NAT: init_cfg type='Pretrained' needs 'checkpoint' and accepts "
                    f'{list(_PRETRAINED_OPTIONS)}; got {sorted(options)}')
            load_pretrained(self, **options)
        self._is_init = True

    @staticmethod
    def _init_module_from_scratch(module):
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            module.reset_parameters()
        elif isinstance(module, NeighborhoodAttention2D) and module.rpb is not None:
            nn.init.trunc_normal_(module.rpb, std=.02)
        elif isinstance(module, NATBlock) and module.layer_scale is not None:
            nn.init.constant_(module.gamma1, module.layer_scale)
            nn.init.constant_(module.gamma2, module.layer_scale)
