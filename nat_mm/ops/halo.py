"""Blocked ("halo") neighbourhood attention on top of fused SDPA.

The map is cut, per dilation group, into tiles of ``Ty x Tx`` queries. Every
query's K x K window lies inside its tile's halo: ``Hy x Hx`` keys with
``H* = T* + K - 1`` (or the whole group when that is shorter). Each tile
attends to its halo through ``torch.nn.functional.scaled_dot_product_attention``
with an additive mask that is 0 inside each query's window and -inf outside,
so the numbers are exactly NATTEN's while only the halo (about
(T+K-1)^2 / T^2 copies of K and V, not K*K) is materialised.

The relative position bias rides along in one of two ways:

* no gradient needed (inference, frozen rpb): the bias is added to the mask;
* gradient needed: fused SDPA kernels do not differentiate an additive mask
  on every device (the CPU flash kernel falls back to the slow math path), so
  the bias is folded into the dot product instead. Query ``i`` of a tile gets
  ``Tq`` extra channels holding the one-hot vector ``e_i`` and key ``p`` gets
  the bias column ``bias[:, p]``; then ``q'.k' = scale q.k + bias[i, p]`` and
  the kernel's own key gradient carries the bias gradient.

Everything that depends only on the map size (gather indices, window masks,
bias indices) is computed once per shape and cached.
"""
import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

#: Queries per tile along each axis. 4x4 tiles keep the halo overhead low
#: ((4+6)^2 / 7^2 = 2x the K*K dot products for K=7) and the folded bias narrow
#: (16 extra channels).
DEFAULT_TILE = 4


class AxisPlan(NamedTuple):
    """Tiling of one axis of length L (all LongTensors).

    query_index: (n_tiles * T,) position of each tile query; the padding
        queries of a group's last tile repeat its last position.
    key_index: (n_tiles * halo,) position of each halo key (clamped to the group).
    output_index: (L,) for each position, its slot in ``query_index``.
    tile_type: (n_tiles,) index into ``rel_types``.
    rel_types: (n_types, T, halo) rpb index ``(K-1) + (key - query) / d`` of
        each (query, halo key) pair, or ``2K-1`` where the key is outside the
        query's window.
    tile, halo: T and the halo length.
    """
    query_index: torch.Tensor
    key_index: torch.Tensor
    output_index: torch.Tensor
    tile_type: torch.Tensor
    rel_types: torch.Tensor
    tile: int
    halo: int


@functools.lru_cache(maxsize=256)
def axis_plan(length, kernel_size, dilation, tile):
    """Builds the :class:`AxisPlan` of one axis (on CPU, cached)."""
    half = kernel_size // 2
    outside = 2 * kernel_size - 1
    group_lengths = [(length - g + dilation - 1) // dilation for g in range(dilation)]
    tile = min(tile, max(group_lengths))
    halo = min(tile + kernel_size - 1, max(group_lengths))
    query_index, key_index, rel = [], [], []
    output_index = torch.empty(length, dtype=torch.long)
    i = torch.arange(tile)
    p = torch.arange(halo)
    for group, group_len in enumerate(group_lengths):
        for first in range(0, group_len, tile):
            queries = (first + i).clamp(max=group_len - 1)              # group units
            halo_start = min(max(first - half, 0), max(group_len - halo, 0))
            keys = halo_start + p
            window_start = (queries - half).clamp(min=0).clamp(max=group_len - kernel_size)
            offset = keys[None, :] - window_start[:, None]              # (T, halo)
            inside = (offset >= 0) & (offset < kernel_size)
            rel.append(torch.where(inside, (kernel_size - 1) + keys[None, :] - queries[:, None],
                                   torch.full_like(offset, outside)))
            slot = len(query_index) * tile
            real = min(tile, group_len - first)
            output_index[group + dilation * (first + i[:real])] = slot + i[:real]
            query_index.append(group + dilation * queries)
            key_index.append(group + dilation * keys.clamp(max=group_len - 1))
    rel_types, tile_type = torch.unique(torch.stack(rel), dim=0, return_inverse=True)
    return AxisPlan(torch.cat(query_index), torch.cat(key_index), output_index,
                    tile_type, rel_types, tile, halo)


class GridPlan(NamedTuple):
    """Tiling of an H x W map on one device; positions are flat (y * W + x).

    query_index: (n_tiles * Tq,) position of each tile query, tiles in
        row-major order, queries row-major inside a tile.
    key_index: (n_tiles * Tk,) position of each halo key.
    output_index: (H * W,) slot of each position in ``query_index``.
    query_slot: (H * W,) the index of each position inside its tile (0..Tq-1).
    query_inverse: (n_tiles * Tq,) for each slot, the position it outputs, or
        H * W for the padding slots.
    key_sources: (H * W, M) the halo slots holding each position inside some
        window, padded with n_tiles * Tk.
    row_type, col_type: (n_tile_rows,), (n_tile_cols,) tile types per axis.
    type_rel: (n_row_types, n_col_types, Tq, Tk) flat index into the
        (2K) x (2K) rpb table padded with a zero row and column, where index
        2K-1 on either axis means "outside the window".
    window_mask: (n_tiles, 1, Tq, Tk) float, 0 inside each query's window and
        -inf outside.
    """
    query_index: torch.Tensor
    key_index: torch.Tensor
    output_index: torch.Tensor
    query_slot: torch.Tensor
    query_inverse: torch.Tensor
    key_sources: torch.Tensor
    row_type: torch.Tensor
    col_type: torch.Tensor
    type_rel: torch.Tensor
    window_mask: torch.Tensor
    n_queries: int
    n_keys: int


def _tile_major(rows, cols, row_block, col_block, width):
    """Flat positions of a tiled product grid, tile by tile.

    rows (n_tile_rows * row_block,), cols (n_tile_cols * col_block,) ->
    (n_tile_rows * n_tile_cols * row_block * col_block,).
    """
    grid = rows.view(-1, 1, row_block, 1) * width + cols.view(1, -1, 1, col_block)
    return grid.flatten()


def _slot_lists(index, used, n_positions):
    """(n_positions, M): the slots j with ``index[j] == position`` and
    ``used[j]``, padded with ``len(index)``."""
    slots = torch.arange(len(index))[used]
    positions = index[used]
    order = torch.argsort(positions, stable=True)
    slots, positions = slots[order], positions[order]
    counts = torch.bincount(positions, minlength=n_positions)
    rank = torch.arange(len(positions)) - (torch.cumsum(counts, 0) - counts)[positions]
    table = torch.full((n_positions, int(counts.max())), len(index))
    table[positions, rank] = slots
    return table


@functools.lru_cache(maxsize=64)
def grid_plan(height, width, kernel_size, dilation, tile_h, tile_w, device):
    rows = axis_plan(height, kernel_size, dilation, tile_h)
    cols = axis_plan(width, kernel_size, dilation, tile_w)
    side = 2 * kernel_size
    ry = rows.rel_types[:, None, :, None, :, None]      # (ty, 1, Ty, 1, Hy, 1)
    rx = cols.rel_types[None, :, None, :, None, :]      # (1, tx, 1, Tx, 1, Hx)
    n_queries, n_keys = rows.tile * cols.tile, rows.halo * cols.halo
    shape = (len(rows.rel_types), len(cols.rel_types), n_queries, n_keys)
    type_rel = (ry * side + rx).reshape(shape)
    inside = ((ry < side - 1) & (rx < side - 1)).reshape(shape)
    inside = inside[rows.tile_type][:, cols.tile_type].flatten(0, 1)   # (n_tiles, Tq, Tk)
    window_mask = torch.zeros(inside.shape).masked_fill_(~inside, float('-inf'))[:, None]
    query_index = _tile_major(rows.query_index, cols.query_index, rows.tile, cols.tile, width)
    key_index = _tile_major(rows.key_index, cols.key_index, rows.halo, cols.halo, width)
    n_tile_cols = len(cols.tile_type)
    oy, ox = rows.output_index[:, None], cols.output_index[None, :]
    query_slot = (oy % rows.tile) * cols.tile + ox % cols.tile
    tile = (oy // rows.tile) * n_tile_cols + ox // cols.tile
    output_index = (tile * n_queries + query_slot).flatten()
    query_inverse = torch.full_like(query_index, height * width)
    query_inverse[output_index] = torch.arange(height * width)
    key_sources = _slot_lists(key_index, inside.any(1).flatten(), height * width)
    tensors = (query_index, key_index, output_index, query_slot.flatten(), query_inverse,
               key_sources, rows.tile_type, cols.tile_type, type_rel, window_mask)
    return GridPlan(*(t.to(device) for t in tensors), n_queries, n_keys)


def _per_tile(per_type, plan: GridPlan):
    """(..., n_row_types, n_col_types, Tq, Tk) -> (..., n_tiles, Tq, Tk)."""
    dims = per_type.dim()
    per_tile = per_type.index_select(dims - 4, plan.row_type)
    per_tile = per_tile.index_select(dims - 3, plan.col_type)
    return per_tile.flatten(dims - 4, dims - 3)


class _Gather(torch.autograd.Function):
    """``x.index_select(1, index)`` whose backward is a gather too.

    ``sources[j]`` lists the output rows that hold ``x[:, j]`` (padded with
    ``len(index)``, which reads a zero row), so the gradient of ``x`` is a
    gather plus a sum over at most M copies instead of zero-fill +
    ``index_add_``, which is serial on CPU. Output rows left out of
    ``sources`` must receive zero gradient: true for the padding queries that
    repeat a position (their outputs are dropped) and for halo keys clamped
    onto a position outside every window (masked, so weightless).
    """

    @staticmethod
    def forward(ctx, x, index, sources):
        ctx.save_for_backward(sources)
        return x.index_select(1, index)

    @staticmethod
    def backward(ctx, grad):
        sources, = ctx.saved_tensors
        grad = torch.cat([grad, grad.new_zeros(grad.shape[0], 1, *grad.shape[2:])], dim=1)
        gathered = grad.index_select(1, sources.flatten())
        if sources.shape[1] > 1:
            gathered = gathered.view(grad.shape[0], *sources.shape, *grad.shape[2:]).sum(2)
        return gathered, None, None


def _positions(x):
    """(B, heads, H, W, D) -> (B, H * W, heads, D); a view for the module's q/k/v."""
    return x.permute(0, 2, 3, 1, 4).flatten(1, 2)


def _to_tiles(x, block):
    """(B, n_tiles * block, heads, C) -> (B * n_tiles, heads, block, C), a view."""
    batch, _, heads, channels = x.shape
    return x.view(batch, -1, block, heads, channels).transpose(2, 3).flatten(0, 1)


def na2d_halo(query, key, value, kernel_size, dilation, rpb, scale, dropout_p=0.0,
              tile=DEFAULT_TILE):
    """Neighbourhood attention by halo tiles; arguments as :func:`nat_mm.na2d`
    (already validated). ``tile`` is the query tile side (int or (h, w))."""
    batch, heads, height, width, head_dim = query.shape
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    plan = grid_plan(height, width, kernel_size, dilation, tile_h, tile_w, query.device)
    n_queries, n_keys = plan.n_queries, plan.n_keys
    window_mask = plan.window_mask.to(query.dtype).repeat(batch, 1, 1, 1)   # (B*tiles, 1, Tq, Tk)
    dropout_p = dropout_p if torch.is_grad_enabled() else 0.0
    table = None if rpb is None else F.pad(rpb, (0, 1, 0, 1)).flatten(1)   # (heads, 4K^2)
    n_slots = plan.query_index.numel()

    def gather_queries(x):
        return _to_tiles(_Gather.apply(x, plan.query_index, plan.output_index[:, None]),
                         n_queries)

    def gather_keys(x):
        return _to_tiles(_Gather.apply(x, plan.key_index, plan.key_sources), n_keys)

    if table is not None and table.requires_grad and torch.is_grad_enabled():
        # Fold the bias into the dot product (see the module docstring): query
        # channels [q * scale, e_slot], key channels [k, bias[:, key]], value
        # channels [v, 0].
        one_hot = F.one_hot(plan.query_slot, n_queries).to(query.dtype)
        q = torch.cat([_positions(query) * scale,
                       one_hot[None, :, None].expand(batch, -1, heads, -1)], dim=-1)
        q = gather_queries(q)
        bias = _per_tile(table[:, plan.type_rel], plan).to(query.dtype)   # (heads, tiles, Tq, Tk)
        k = torch.cat([gather_keys(_positions(key)),
                       bias.transpose(0, 1).transpose(-1, -2).repeat(batch, 1, 1, 1)], dim=-1)
        v = gather_keys(F.pad(_positions(value), (0, n_queries)))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask,
                                             dropout_p=dropout_p, scale=1.0)
    else:
        q = gather_queries(_positions(query))
        k = gather_keys(_positions(key))
        v = gather_keys(_positions(value))
        mask = window_mask
        if table is not None:
            bias = _per_tile(table[:, plan.type_rel], plan).to(query.dtype)   # (heads, tiles, Tq, Tk)
            mask = window_mask + bias.transpose(0, 1).repeat(batch, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                             scale=scale)
    # (B * tiles, heads, Tq, C) -> (B, tiles * Tq, heads, C) -> map positions
    out = out.unflatten(0, (batch, -1)).transpose(2, 3).reshape(batch, n_slots, heads, -1)
    out = _Gather.apply(out[..., :head_dim], plan.output_index, plan.query_inverse[:, None])
    return out.view(batch, height, width, heads, head_dim).permute(0, 3, 1, 2, 4)
