"""Neighbourhood attention from dense, exportable ops: the ``'export'`` backend.

``torch.export`` and ONNX cannot trace the CSR path's sparse tensors (nor any
custom kernel), so while a model is exported :func:`nat_mm.ops.na2d` runs
this formulation instead. It uses only index gathers (``index_select``:
ONNX ``Gather``), batched matmuls, additions and one softmax; every index is
computed with tensor ops from the (possibly symbolic) map size, so one
exported graph serves every H, W >= kernel_size * dilation.

How it avoids K*K copies of keys and values: queries are cut, per dilation
group along W, into tiles of ``TILE`` consecutive columns of one map row.
For a query row y and a kernel row ky every query of the row reads the same
key row ``rows[y, ky]`` (NATTEN's shifted window along H), and the windows
of a tile's queries along W lie in a halo of ``TILE + K - 1`` columns of it.
So, for each of the K kernel rows, one gather copies the halos of every tile
(``(TILE + K - 1) / TILE`` copies of the keys), a batched matmul gives the
tile's logits against its halo, the rpb is added on the K columns of each
query's window, and the other columns are *selected* to -inf (never added
to: a NaN or inf key reaches only the logits of the queries whose window
holds it). The softmax runs over
the K halo rows at once (``K * (TILE + K - 1)`` logits per query, of which
K*K are finite; the others get weight exactly 0), and the output is the sum
over kernel rows of weights @ value halo. Peak extra memory: the logits and
weights (``K * (TILE + K - 1)`` per query and head) and one halo copy of
keys or values at a time.
"""
import torch
import torch.nn.functional as F

#: Query columns per tile: a query computes K * (TILE + K - 1) logits (2x
#: K*K for K = 7), and each kernel row copies (TILE + K - 1) / TILE keys.
TILE = 8


def is_available(device_type):
    """Dense ops only: available on every device."""
    return True


def _row_windows(height, kernel_size, dilation, device):
    """Key rows and rpb row indices of every query row.

    Args:
        height: map height H (int or symbolic size), >= kernel_size * dilation.

    Returns:
        (rows, bias): LongTensors (H, K); ``rows[y, ky]`` is the map row of
        the ky-th kernel row of query row y, ``bias[y, ky]`` its rpb index
        ``(K-1) + (key_row - y) / dilation``.
    """
    y = torch.arange(height, device=device)
    group, in_group = y % dilation, y // dilation
    group_len = (height - group + dilation - 1) // dilation
    start = torch.minimum((in_group - kernel_size // 2).clamp(min=0), group_len - kernel_size)
    steps = start[:, None] + torch.arange(kernel_size, device=device)
    return group[:, None] + dilation * steps, (kernel_size - 1) + steps - in_group[:, None]


def _column_tiles(width, kernel_size, dilation, device):
    """The column tiling of one map row.

    Slots are (group g, tile n, t) with ``n < tiles`` where ``tiles`` covers
    the longest dilation group (plus one); slot (g, n, t) holds the query column
    ``g + d * (n * TILE + t)``, or for slots past the end of group g a copy
    of the group's last query (computed, then never read back).

    Returns:
        query: (d * tiles, TILE) the query column of each slot.
        slot: (W,) the flat slot ``tile * TILE + t`` of each column (gathers
            the outputs back).
        halo: (d * tiles, TILE + K - 1) the key columns of each tile's halo.
        bias: (d * tiles, TILE, TILE + K - 1) rpb column index of each
            (query, halo column) inside the query's window, ``2K - 1``
            outside (where the logits are selected to -inf).
    """
    k, d = kernel_size, dilation
    # One tile more than the longest group needs: with at least 2 tiles
    # torch.export need not guard a size-1 dimension (the extra tile is dropped).
    tiles = ((width + d - 1) // d + TILE - 1) // TILE + 1
    # Tile m of the flat (group, tile) axis: group m // tiles, tile m % tiles
    # (built flat: reshaping symbolic sizes would make torch.export guard them).
    m = torch.arange(d * tiles, device=device)[:, None]
    g = m // torch.full((), tiles, device=device)              # (d * tiles, 1)
    n = m - g * tiles
    group_len = (width - g + d - 1) // d
    in_group = torch.minimum(n * TILE + torch.arange(TILE, device=device), group_len - 1)
    start = torch.minimum((in_group - k // 2).clamp(min=0), group_len - k)   # (d*tiles, TILE)
    halo_start = start[:, :1]
    position = halo_start + torch.arange(TILE + k - 1, device=device)   # (d*tiles, TILE+K-1)
    halo = g + d * torch.minimum(position, group_len - 1)
    position = position[:, None, :]
    inside = (position >= start[..., None]) & (position < start[..., None] + k)
    bias = torch.where(inside, (k - 1) + position - in_group[..., None], 2 * k - 1)
    x = torch.arange(width, device=device)
    slot = (x % d) * (tiles * TILE) + x // d
    return g + d * in_group, slot, halo, bias


def na2d_export(query, key, value, kernel_size, dilation, rpb, scale, dropout_p):
    """Neighbourhood attention (NATTEN's semantics) by halo gathers and matmuls.

    Args:
        query, key, value: (B, heads, H, W, head_dim), H and W >= K * dilation
            (checked by :func:`nat_mm.ops.na2d`).
        kernel_size: odd K.
        dilation: d >= 1.
        rpb: (heads, 2K-1, 2K-1) or None.
        scale: logit scale (a number).
        dropout_p: dropout probability on the attention weights (applied as given).

    Returns:
        (B, heads, H, W, head_dim), in the inputs' dtype; float16/bfloat16
        inputs are computed in float32 (large logits overflow a half softmax).
    """
    if query.dtype in (torch.float16, torch.bfloat16):
        dtype = query.dtype
        rpb = None if rpb is None else rpb.float()
        with torch.autocast(query.device.type, enabled=False):
            out = na2d_export(query.float(), key.float(), value.float(), kernel_size, dilation,
                              rpb, scale, dropout_p)
        return out.to(dtype)
    batch, heads, height, width, head_dim = query.shape
    k = kernel_size
    halo_len = TILE + k - 1
    device = query.device
    rows, row_bias = _row_windows(height, k, dilation, device)
    query_cols, slot, halo, col_bias = _column_tiles(width, k, dilation, device)

    # Every gather is an embedding lookup (ONNX Gather on axis 0) of rows of a
    # (B * heads * H * W, D) table, with an index of the result's shape: no
    # transposes around the gathers, no reshapes of symbolic sizes.
    maps = torch.arange(batch * heads, device=device).view(batch, heads, 1, 1, 1)
    map_rows = maps * height + torch.arange(height, device=device).view(-1, 1, 1)  # (B,h,H,1,1)
    queries = F.embedding(map_rows * width + query_cols, (query * scale).reshape(-1, head_dim))
    queries_t = queries.transpose(-1, -2)                   # (B, heads, H, tiles, D, TILE)
    keys_table = key.reshape(-1, head_dim)
    values_table = value.reshape(-1, head_dim)
    # Index tensors per kernel row (not for all K at once: they are as large
    # as the logits). Table row of halo column j of tile n in kernel row ky,
    # (B, heads, H, tiles, halo):
    map_starts = maps * height

    def halo_rows(ky):
        return (map_starts + rows[:, ky, None, None]) * width + halo

    if rpb is None:
        table = torch.zeros((), dtype=query.dtype, device=device).expand(
            heads, 2 * k - 1, 2 * k - 1)
    else:
        table = rpb.to(query.dtype)
    # (heads * (2K-1) * 2K, 1): each rpb row with one column appended for the
    # halo columns outside a window (their logits are then selected away).
    bias_table = torch.cat([table, torch.zeros_like(table[:, :, :1])], dim=2).reshape(-1, 1)
    head_rows = torch.arange(heads, device=device).view(-1, 1, 1, 1, 1) * (2 * k - 1)
    col_bias = col_bias.transpose(-1, -2)                      # (tiles, halo, TILE)
    in_window = col_bias != 2 * k - 1

    # Logits transposed, (halo, TILE) per tile: keys @ queries^T needs no
    # transposed copy of the K halos.
    logits = []
    for ky in range(k):
        keys = F.embedding(halo_rows(ky), keys_table)            # (B, heads, H, tiles, halo, D)
        # (heads, H, tiles, halo, TILE): bias_table row of (halo column, query).
        bias_rows = (head_rows + row_bias[:, ky, None, None, None]) * (2 * k) + col_bias
        scores = torch.matmul(keys, queries_t) + F.embedding(bias_rows, bias_table)[..., 0]
        logits.append(torch.where(in_window, scores, float('-inf')))
    # (B, heads, H, tiles, TILE, K * halo)
    weights = torch.cat(logits, dim=-2).transpose(-1, -2).softmax(dim=-1)
    del logits
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    out = None
    for ky in range(k):
        values = F.embedding(halo_rows(ky), values_table)
        part = torch.matmul(weights[..., ky * halo_len:(ky + 1) * halo_len], values)
        out = part if out is None else out + part
    tiles = halo.shape[0]
    out_rows = (map_rows[..., 0] * tiles * TILE + slot)        # (B, heads, H, W)
    return F.embedding(out_rows, out.reshape(-1, head_dim))
