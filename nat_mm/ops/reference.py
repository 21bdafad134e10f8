"""Slow, obviously-correct neighbourhood attention: what every backend is tested against.

It follows NATTEN's (<= 0.17) definition literally and shares no code with the
fast backends: each query's window is worked out in plain Python from the
definition (:func:`window_1d`), then the K x K neighbours of every query are
gathered (K*K copies of keys and values: the "legacy" pure-PyTorch design) and
a softmax runs over them. The tests also check it against NATTEN's own
numbers (``tests/data/natten_0.17.5_na2d.pt``).
"""
import torch


def window_1d(query, length, kernel_size, dilation):
    """The window of one query along one axis, by the definition.

    Positions ``g, g + d, g + 2d, ...`` form the query's dilation group ``g =
    query mod d``; along the group the query is the ``query div d``-th
    member. Its window is K consecutive group members centred on it, moved
    inward as far as needed to stay inside the group (never padded).

    Returns:
        (keys, bias): K key positions, and each key's index into the
        (2K-1)-long rpb axis, ``(K-1) + (key - query) / d``.
    """
    group = query % dilation
    members = list(range(group, length, dilation))
    me = members.index(query)
    start = me - kernel_size // 2
    if start < 0:
        start = 0
    if start + kernel_size > len(members):
        start = len(members) - kernel_size
    window = range(start, start + kernel_size)
    return ([members[j] for j in window],
            [kernel_size - 1 + (j - me) for j in window])


def _axis_tables(length, kernel_size, dilation, device):
    keys, bias = zip(*(window_1d(i, length, kernel_size, dilation) for i in range(length)))
    return (torch.tensor(keys, device=device), torch.tensor(bias, device=device))


def na2d_reference(query, key, value, kernel_size, dilation=1, rpb=None,
                   scale=None, dropout_p=0.0):
    """Neighbourhood attention by explicit gathering.

    Args:
        query, key, value: (B, heads, H, W, head_dim).
        kernel_size: odd K >= 3.
        dilation: d >= 1, with H, W >= K * d.
        rpb: (heads, 2K-1, 2K-1) relative position bias, or None.
        scale: logit scale, default head_dim ** -0.5.
        dropout_p: dropout probability on the attention weights (applied
            whenever it is > 0, as for :func:`nat_mm.na2d`).

    Returns:
        (B, heads, H, W, head_dim).
    """
    _, _, height, width, head_dim = query.shape
    if scale is None:
        scale = head_dim ** -0.5
    k = kernel_size
    rows, row_bias = _axis_tables(height, k, dilation, query.device)
    cols, col_bias = _axis_tables(width, k, dilation, query.device)
    # (B, heads, H, W, K, K, D): key[b, h, rows[y, ky], cols[x, kx]], row-major neighbours
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
        weights = torch.nn.functional.dropout(weights, dropout_p, training=True)
    return torch.einsum('bhyxij,bhyxijd->bhyxd', weights, values)
