"""Neighbourhood attention, functional form (pure PyTorch)."""
import torch

from .csr import na2d_csr
from .halo import na2d_halo


def _check_na2d_args(query, key, value, kernel_size, dilation, rpb):
    if not all(isinstance(t, torch.Tensor) for t in (query, key, value)):
        raise TypeError('na2d: query, key and value must be torch.Tensors')
    if query.dim() != 5:
        raise ValueError(
            f'na2d: query must have 5 dims (B, heads, H, W, head_dim), got shape '
            f'{tuple(query.shape)}')
    if key.shape != query.shape or value.shape != query.shape:
        raise ValueError(
            f'na2d: query, key and value shapes disagree: {tuple(query.shape)}, '
            f'{tuple(key.shape)}, {tuple(value.shape)}')
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise ValueError(
            f'na2d: query, key and value dtypes disagree: {query.dtype}, {key.dtype}, '
            f'{value.dtype}')
    if key.device != query.device or value.device != query.device:
        raise ValueError(
            f'na2d: query, key and value devices disagree: {query.device}, {key.device}, '
            f'{value.device}')
    if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f'na2d: kernel_size must be an odd int >= 3, got {kernel_size!r}')
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f'na2d: dilation must be an int >= 1, got {dilation!r}')
    height, width = query.shape[2:4]
    window = kernel_size * dilation
    if height < window or width < window:
        raise ValueError(
            f'na2d: the feature map ({height}x{width}) is smaller than kernel_size * dilation '
            f'= {kernel_size}*{dilation} = {window}. Use nat_mm.NeighborhoodAttention2D, which '
            'zero-pads small inputs as the official NAT models did.')
    if rpb is not None:
        expected = (query.shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1)
        if not isinstance(rpb, torch.Tensor) or tuple(rpb.shape) != expected:
            got = tuple(rpb.shape) if isinstance(rpb, torch.Tensor) else type(rpb).__name__
            raise ValueError(
                f'na2d: rpb must have shape (heads, 2K-1, 2K-1) = {expected}, got {got}')


def na2d(query, key, value, kernel_size, dilation=1, rpb=None, scale=None, dropout_p=0.0):
    """2-D neighbourhood attention with NATTEN's exact semantics.

    Args:
        query, key, value: (B, heads, H, W, head_dim), same dtype and device.
        kernel_size: odd K >= 3; every query attends to K x K keys.
        dilation: d >= 1; H and W must be >= K * d.
        rpb: relative position bias (heads, 2K-1, 2K-1) or None.
        scale: logit scale, default head_dim ** -0.5.
        dropout_p: dropout probability on the attention weights (training only).

    Returns:
        (B, heads, H, W, head_dim).

    On CPU it is computed by sparse CSR products (:mod:`nat_mm.ops.csr`), on
    other devices by dense batched matmuls over halo tiles
    (:mod:`nat_mm.ops.halo`); both are tested against the slow gather
    implementation :func:`nat_mm.ops.na2d_reference`.
    """
    _check_na2d_args(query, key, value, kernel_size, dilation, rpb)
    if scale is None:
        scale = query.shape[-1] ** -0.5
    fast_path = na2d_csr if query.device.type == 'cpu' else na2d_halo
    return fast_path(query, key, value, kernel_size, dilation, rpb, scale, dropout_p)
