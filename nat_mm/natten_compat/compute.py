"""What every NATTEN API generation computes with, on nat_mm.

- :func:`neighbourhood_logits` and :func:`neighbourhood_sum`: NATTEN's *split*
  operators (``na2d_qk`` / ``na2d_av``, ``natten2dqkrpb`` / ``natten2dav``),
  whose attention weights are a tensor the caller sees and changes (softmax,
  dropout, ...). Neighbour ``n = i * K + j`` of a query is the key in row
  ``i`` and column ``j`` of its window, counted from the window's start: NATTEN's
  order. The neighbours' keys or values are gathered (K*K copies) from the
  flattened map with one ``index_select`` (its backward is an ``index_add``)
  and multiplied with batched matmuls, so any device and dtype works and
  autograd needs nothing custom. What this costs against the fused operator:
  docs/natten_compat.md.
- :func:`heads_last_na2d`: NATTEN's fused operator in its heads-last layout,
  through :func:`nat_mm.na2d` (any of its backends, with gradients).
"""
import functools

import torch

from ..ops import na2d
from ..ops.common import neighborhood_indices
from ..ops.functional import _check_na2d_args


@functools.lru_cache(maxsize=16)
def _neighbours(height, width, kernel_size, dilation, device):
    """(H*W*K*K,) flat map position of each query's neighbours, in NATTEN's order,
    and (H*W*K*K,) each one's flat index into a (2K-1, 2K-1) rpb table."""
    rows, row_bias = neighborhood_indices(height, kernel_size, dilation, device)
    cols, col_bias = neighborhood_indices(width, kernel_size, dilation, device)
    keys = rows[:, None, :, None] * width + cols[None, :, None, :]             # (H, W, K, K)
    bias = row_bias[:, None, :, None] * (2 * kernel_size - 1) + col_bias[None, :, None, :]
    return keys.flatten(), bias.flatten()


def _gather(x, index):
    """(B, heads, H, W, D) -> (B, heads, H*W, K*K, D): each query's neighbours."""
    batch, heads, height, width, head_dim = x.shape
    return x.reshape(batch, heads, height * width, head_dim).index_select(2, index).view(
        batch, heads, height * width, -1, head_dim)


def neighbourhood_logits(query, key, kernel_size, dilation, rpb=None):
    """Dot products of every query with its K*K neighbours' keys, plus the rpb.

    Args:
        query, key: (B, heads, H, W, D); the query is not scaled here (NATTEN's
            callers scale it first).
        kernel_size: odd K >= 3; dilation: d >= 1, with H, W >= K * d.
        rpb: (heads, 2K-1, 2K-1) relative position bias, or None.

    Returns:
        (B, heads, H, W, K*K) in NATTEN's neighbour order.
    """
    _check_na2d_args(query, key, key, kernel_size, dilation, rpb)
    batch, heads, height, width, head_dim = query.shape
    keys, bias = _neighbours(height, width, kernel_size, dilation, query.device)
    logits = torch.matmul(query.reshape(batch, heads, height * width, 1, head_dim),
                          _gather(key, keys).transpose(-1, -2))
    logits = logits.view(batch, heads, height, width, -1)
    if rpb is not None:
        logits = logits + rpb.flatten(1).index_select(1, bias).view(heads, height, width, -1)
    return logits


def neighbourhood_sum(attn, value, kernel_size, dilation):
    """Every query's neighbours' values weighted by ``attn``.

    Args:
        attn: (B, heads, H, W, K*K) weights in NATTEN's neighbour order.
        value: (B, heads, H, W, D), same dtype and device.
        kernel_size, dilation: as for :func:`neighbourhood_logits`.

    Returns:
        (B, heads, H, W, D).
    """
    _check_na2d_args(value, value, value, kernel_size, dilation, None)
    batch, heads, height, width, head_dim = value.shape
    expected = (batch, heads, height, width, kernel_size * kernel_size)
    if not isinstance(attn, torch.Tensor) or tuple(attn.shape) != expected:
        got = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
        raise ValueError(
            f'na2d_av: attn must have shape (B, heads, H, W, K*K) = {expected} for value '
            f'{tuple(value.shape)} and kernel_size {kernel_size}, got {got}')
    if attn.dtype != value.dtype or attn.device != value.device:
        raise ValueError(
            f'na2d_av: attn ({attn.dtype}, {attn.device}) and value ({value.dtype}, '
            f'{value.device}) must have the same dtype and device')
    keys, _ = _neighbours(height, width, kernel_size, dilation, value.device)
    out = torch.matmul(attn.reshape(batch, heads, height * width, 1, -1), _gather(value, keys))
    return out.view(batch, heads, height, width, head_dim)


def heads_last_na2d(function, query, key, value, kernel_size, dilation, rpb=None, scale=None):
    """NATTEN's fused 2-D neighbourhood attention in its layout, by :func:`nat_mm.na2d`.

    Args:
        function: the NATTEN name being served (for messages).
        query, key, value: (B, H, W, heads, D).
        kernel_size, dilation, rpb, scale: as for :func:`nat_mm.na2d`.

    Returns:
        (B, H, W, heads, D), contiguous (as NATTEN returns it).
    """
    for name, tensor in (('query', query), ('key', key), ('value', value)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 5:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise ValueError(
                f'{function}: {name} must be (B, H, W, heads, head_dim) (heads last, NATTEN '
                f'0.17+ fused layout), got {got}')
    out = na2d(*(t.permute(0, 3, 1, 2, 4) for t in (query, key, value)), kernel_size,
               dilation, rpb, scale)
    return out.permute(0, 2, 3, 1, 4).contiguous()
