"""NeighborhoodAttention2D: the thin module around :func:`na2d`."""
import torch
import torch.nn.functional as F
from torch import nn

from .functional import na2d


def _padding(window, size):
    """max(0, window - size), symbolic under torch.export (max() would
    specialise the size); torch.jit.trace gives sizes as tensors: made ints."""
    if isinstance(size, torch.Tensor):
        size = int(size)
    return torch.sym_max(0, window - size)


class NeighborhoodAttention2D(nn.Module):
    """Multi-head 2-D neighbourhood attention with relative position bias.

    Parameter names (``qkv``, ``rpb``, ``proj``) match the official NAT
    checkpoints.

    Inputs smaller than the window (H or W < kernel_size * dilation) are
    zero-padded on the right/bottom up to kernel_size * dilation before
    ``qkv`` and cropped back after attention, before ``proj``, as the NATTEN
    0.14 module used by the official detection/segmentation models did
    (padded tokens are real, unmasked keys whose q/k/v equal the qkv bias).

    Args:
        dim: channels C.
        num_heads: heads; C must be divisible by it.
        kernel_size: odd K >= 3.
        dilation: d >= 1.
        qkv_bias: bias in the qkv projection.
        qk_scale: logit scale, default head_dim ** -0.5.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
        rel_pos_bias: learn a (heads, 2K-1, 2K-1) relative position bias.

    Shape:
        input (B, H, W, C) for any H, W >= 1; output (B, H, W, C).
    """

    def __init__(self, dim, num_heads, kernel_size=7, dilation=1, qkv_bias=True,
                 qk_scale=None, attn_drop=0., proj_drop=0., rel_pos_bias=True):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(
                f'NeighborhoodAttention2D: kernel_size must be an odd int >= 3, got '
                f'{kernel_size!r}')
        if not isinstance(dilation, int) or dilation < 1:
            raise ValueError(
                f'NeighborhoodAttention2D: dilation must be an int >= 1, got {dilation!r}')
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(
                f'NeighborhoodAttention2D: dim ({dim}) must be divisible by num_heads '
                f'({num_heads})')
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(
                torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=.02, a=-2., b=2.)
        else:
            self.register_parameter('rpb', None)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self):
        return (f'num_heads={self.num_heads}, kernel_size={self.kernel_size}, '
                f'dilation={self.dilation}, rel_pos_bias={self.rpb is not None}')

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(
                f'NeighborhoodAttention2D expects (B, H, W, C) input, got shape {tuple(x.shape)}')
        _, height, width, channels = x.shape
        if channels != self.dim:
            raise ValueError(
                f'NeighborhoodAttention2D: input has {channels} channels, expected {self.dim} '
                f'(its dim): give {self.dim}-channel maps, or build it with dim={channels}')
        window = self.kernel_size * self.dilation
        # Sizes known to need no padding skip the pad.
        pad_h, pad_w = _padding(window, height), _padding(window, width)
        padded = not (isinstance(pad_h, int) and isinstance(pad_w, int) and pad_h == pad_w == 0)
        if padded:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        qkv = self.qkv(x).reshape(*x.shape[:3], 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
        out = na2d(q, k, v, self.kernel_size, self.dilation, self.rpb, self.scale,
                   dropout_p=self.attn_drop if self.training else 0.)
        out = out.permute(0, 2, 3, 1, 4).flatten(3)
        if padded:
            out = out[:, :height, :width]
        return self.proj_drop(self.proj(out))
