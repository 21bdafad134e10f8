"""Neighbourhood attention from dense, exportable ops: the ``'export'`` backend.

``torch.export`` and ONNX cannot trace the CSR path's sparse tensors (nor any
custom kernel), so while a model is exported :func:`nat_mm.ops.na2d` runs
this formulation instead. It uses only index gathers (``index_select``:
ONNX ``Gather``), batched matmuls, additions and one softmax; every index is
computed with tensor ops from the (possibly symbolic) map size, so one
exported graph serves every H, W >= kernel_size * dilation.

How it avoids K*K copies of keys and values: the windows of NATTEN's
neighbourhood attention are products of 1-D windows (rows x columns), so
queries are cut, per dilation group along each axis, into tiles of
``TILE x TILE`` queries whose windows all lie in a halo of
``(TILE + K - 1) x (TILE + K - 1)`` keys. One gather copies every tile's
halo of keys (and later of values): ``((TILE + K - 1) / TILE)^2`` copies
(6.25 for K = 7); one batched matmul gives each tile's logits against its
halo; the rpb is added from one-hot row and column indices contracted with
the table (two small matmuls, exact); logits outside each query's window are
*selected* to -inf (never added to: a NaN or inf key reaches only the
logits of the queries whose window holds it); one softmax over the halo
(``(TILE + K - 1)^2`` logits per query, K*K of them finite); one matmul with
the value halo. Peak extra memory: the key or value halos, the logits and the
rpb term. Why TILE is what it is, with the measurements (memory against the
row-by-row formulation and the gather reference, ONNX Runtime time per tile
size): docs/operator.md, "The export backend".
"""
import torch
import torch.nn.functional as F

#: Queries per tile along each axis: a query computes (TILE + K - 1)^2 logits, and the
#: halo gathers copy ((TILE + K - 1) / TILE)^2 keys and values per query.
TILE = 4


def is_available(device_type):
    """Dense ops only: available on every device."""
    return True


def _axis_tiles(width, kernel_size, dilation, device):
    """The tiling of one map axis (rows or columns; written for columns).

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
    """Neighbourhood attention (NATTEN's semantics) by 2-D tile gathers and matmuls.

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
    k, device = kernel_size, query.device
    row_query, row_slot, row_halo, row_bias = _axis_tiles(height, k, dilation, device)
    col_query, col_slot, col_halo, col_bias = _axis_tiles(width, k, dilation, device)
    row_tiles, col_tiles = row_halo.shape[0], col_halo.shape[0]

    # Every gather is an embedding lookup (ONNX Gather on axis 0) of rows of a
    # (B * heads * H * W, D) table, with an index of the result's shape.
    map_rows = torch.arange(batch * heads, device=device).view(batch, heads, 1, 1, 1, 1) * height

    def table_rows(rows, cols):      # (tiles, a), (tiles, b) -> (B, heads, r, c, a, b)
        return (map_rows + rows[:, None, :, None]) * width + cols[None, :, None, :]

    # (B, heads, row tiles, col tiles, TILE * TILE, D) and (..., HALO * HALO, D)
    queries = F.embedding(table_rows(row_query, col_query),
                          (query * scale).reshape(-1, head_dim)).flatten(-3, -2)
    halo_rows = table_rows(row_halo, col_halo)
    keys = F.embedding(halo_rows, key.reshape(-1, head_dim)).flatten(-3, -2)
    logits = torch.matmul(queries, keys.transpose(-1, -2))   # (B, heads, r, c, T*T, HALO^2)

    # rpb of (query, halo key) = rpb[bias_row, bias_col]: one-hot rows and columns
    # contracted with the table (exact: one term per entry); 2K - 1 means outside.
    row_inside, col_inside = row_bias != 2 * k - 1, col_bias != 2 * k - 1
    in_window = (row_inside[:, None, :, None, :, None] & col_inside[None, :, None, :, None, :])
    in_window = in_window.flatten(-2, -1).flatten(2, 3)       # (r, c, T*T, HALO^2)
    if rpb is not None:
        one_hot = torch.arange(2 * k - 1, device=device)
        halo = row_bias.shape[-1]
        # (r, T * HALO, 2K-1) and (c, T * HALO, 2K-1); matmuls, not einsum: einsum's
        # reshapes would merge symbolic tile counts (torch.export guards on them)
        row_hot = (row_bias[..., None] == one_hot).to(query.dtype).flatten(1, 2)
        col_hot = (col_bias[..., None] == one_hot).to(query.dtype).flatten(1, 2)
        by_row = torch.matmul(row_hot[None], rpb.to(query.dtype)[:, None])   # (h, r, TX, 2K-1)
        bias = torch.matmul(by_row[:, :, None], col_hot.transpose(1, 2))      # (h, r, c, TX, TY)
        bias = bias.unflatten(-1, (TILE, halo)).unflatten(-3, (TILE, halo))   # (.., a, x, b, y)
        logits = logits + bias.transpose(-3, -2).flatten(-2, -1).flatten(-3, -2)
    weights = torch.where(in_window, logits, float('-inf')).softmax(dim=-1)
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    values = F.embedding(halo_rows, value.reshape(-1, head_dim)).flatten(-3, -2)
    out = torch.matmul(weights, values)                      # (B, heads, r, c, T*T, D)
    # back to the map: (row tile, col tile, a, b) of each (y, x)
    row_tile, row_in = row_slot // TILE, row_slot % TILE
    col_tile, col_in = col_slot // TILE, col_slot % TILE
    maps = torch.arange(batch * heads, device=device).view(batch, heads, 1, 1) * row_tiles
    out_rows = (((maps + row_tile[:, None]) * col_tiles + col_tile) * TILE
                + row_in[:, None]) * TILE + col_in
    return F.embedding(out_rows, out.reshape(-1, head_dim))
