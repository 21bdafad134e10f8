"""Slow, obviously-correct neighbourhood attention, for tests and benchmarks.

It follows the definition in NATTEN (<= 0.17) literally: for every query it
gathers its K x K neighbours (materialising K*K copies of keys and values) and
runs a softmax over them. This is the "legacy" pure-PyTorch design; the fast
path in :mod:`nat_mm.ops.functional` must agree with it.
"""
import torch


def neighborhood_indices(length: int, kernel_size: int, dilation: int,
                         device=None):
    """Key positions and rpb indices of every query along one axis.

    Args:
        length: number of positions L along the axis (L >= kernel_size * dilation).
        kernel_size: odd window size K.
        dilation: dilation d.

    Returns:
        (keys, bias): two LongTensors of shape (L, K). ``keys[i, t]`` is the
        position of the t-th neighbour of query i; ``bias[i, t]`` is its index
        into the (2K-1)-long rpb axis, ``(K-1) + (key - query) / d``.
    """
    i = torch.arange(length, device=device)
    group = i % dilation
    pos_in_group = i // dilation
    group_len = (length - group + dilation - 1) // dilation
    start = (pos_in_group - kernel_size // 2).clamp(min=0)
    start = torch.minimum(start, group_len - kernel_size)
    t = torch.arange(kernel_size, device=device)
    steps = start[:, None] + t[None, :]                     # (L, K), group units
    keys = group[:, None] + dilation * steps
    bias = (kernel_size - 1) + steps - pos_in_group[:, None]
    return keys, bias


def na2d_reference(query, key, value, kernel_size, dilation=1, rpb=None,
                   scale=None, dropout_p=0.0):
    """Neighbourhood attention by explicit gathering.

    Args:
        query, key, value: (B, heads, H, W, head_dim).
        kernel_size: odd K >= 3.
        dilation: d >= 1, with H, W >= K * d.
        rpb: (heads, 2K-1, 2K-1) relative position bias, or None.
        scale: logit scale, default head_dim ** -0.5.
        dropout_p: dropout probability on the attention weights.

    Returns:
        (B, heads, H, W, head_dim).
    """
    _, _, height, width, head_dim = query.shape
    if scale is None:
        scale = head_dim ** -0.5
    k = kernel_size
    rows, row_bias = neighborhood_indices(height, k, dilation, query.device)
    cols, col_bias = neighborhood_indices(width, k, dilation, query.device)
    # (B, heads, H, W, K, K, D): key[b, h, rows[y, ky], cols[x, kx]]
    r = rows[:, None, :, None].expand(height, width, k, k)
    c = cols[None, :, None, :].expand(height, width, k, k)
    keys = key[:, :, r, c]
    values = value[:, :, r, c]
    logits = torch.einsum('bhyxd,bhyxijd->bhyxij', query * scale, keys)
    if rpb is not None:
        rb = row_bias[:, None, :, None].expand(height, width, k, k)
        cb = col_bias[None, :, None, :].expand(height, width, k, k)
        logits = logits + rpb[:, rb, cb][None]
    weights = logits.flatten(-2).softmax(dim=-1).view_as(logits)
    if dropout_p:
        weights = torch.nn.functional.dropout(weights, dropout_p)
    return torch.einsum('bhyxij,bhyxijd->bhyxd', weights, values)
