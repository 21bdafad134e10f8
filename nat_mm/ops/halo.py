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
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

#: Halo floats (keys or values, all heads and images) per SDPA call; larger
#: maps are attended in several chunks of tiles to bound the backward's peak.
CHUNK_FLOATS = 2 ** 22

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


class RowGather(NamedTuple):
    """``x.index_select(0, index)`` and the CSR form of its transpose.

    The backward of a row gather sums each source row's copies. ``index_add_``
    does that through a slow scatter on CPU; a sparse (source rows x gathered
    rows) 0/1 matrix times the gradient is several times faster.

    index: (n_out,) source row of each gathered row.
    crow, col: CSR rows/columns of the (n_src, n_out) matrix with a 1 at
        (index[j], j).
    """
    index: torch.Tensor
    crow: torch.Tensor
    col: torch.Tensor


def _row_gather(index, n_src):
    order = torch.argsort(index, stable=True)
    crow = F.pad(torch.cumsum(torch.bincount(index, minlength=n_src), 0), (1, 0))
    return RowGather(index, crow, order)


def _move_row_gather(gather: RowGather, device):
    return gather._replace(index=gather.index.to(device), crow=gather.crow.to(device),
                           col=gather.col.to(device))


class TileChunk(NamedTuple):
    """A run of consecutive tiles, attended in one SDPA call.

    queries: gathers the chunk's tile queries, (tiles * Tq) rows, from the
        H * W positions; queries row-major inside a tile.
    keys: gathers the chunk's halo keys, (tiles * Tk) rows.
    tile_type_one_hot: (tiles, n_types) the type of each tile (a type is a
        (row type, column type) pair).
    window_mask: (tiles, 1, Tq, Tk) float, 0 inside each query's window and
        -inf outside.
    """
    queries: RowGather
    keys: RowGather
    tile_type_one_hot: torch.Tensor
    window_mask: torch.Tensor


class GridPlan(NamedTuple):
    """Tiling of an H x W map on one device; positions are flat (y * W + x),
    tiles in row-major order.

    chunks: the tiles, cut into :class:`TileChunk` runs.
    outputs: gathers each position's output from the (n_tiles * Tq) query slots.
    query_slot: (H * W,) the index of each position inside its tile (0..Tq-1).
    type_rel: (n_types, Tq, Tk) flat index into the (2K) x (2K) rpb table
        padded with a zero row and column, where index 2K-1 on either axis
        means "outside the window".
    """
    chunks: tuple
    outputs: RowGather
    query_slot: torch.Tensor
    type_rel: torch.Tensor
    n_queries: int
    n_keys: int


def _tile_major(rows, cols, row_block, col_block, width):
    """Flat positions of a tiled product grid, tile by tile.

    rows (n_tile_rows * row_block,), cols (n_tile_cols * col_block,) ->
    (n_tile_rows * n_tile_cols * row_block * col_block,).
    """
    grid = rows.view(-1, 1, row_block, 1) * width + cols.view(1, -1, 1, col_block)
    return grid.flatten()


@functools.lru_cache(maxsize=64)
def grid_plan(height, width, kernel_size, dilation, tile_h, tile_w, device, n_chunks=1):
    """Builds the :class:`GridPlan` (cached per shape, device and chunking)."""
    rows = axis_plan(height, kernel_size, dilation, tile_h)
    cols = axis_plan(width, kernel_size, dilation, tile_w)
    side = 2 * kernel_size
    ry = rows.rel_types[:, None, :, None, :, None]      # (ty, 1, Ty, 1, Hy, 1)
    rx = cols.rel_types[None, :, None, :, None, :]      # (1, tx, 1, Tx, 1, Hx)
    n_queries, n_keys = rows.tile * cols.tile, rows.halo * cols.halo
    shape = (len(rows.rel_types), len(cols.rel_types), n_queries, n_keys)
    type_rel = (ry * side + rx).reshape(shape).flatten(0, 1)
    n_col_types = len(cols.rel_types)
    tile_type = rows.tile_type[:, None] * n_col_types + cols.tile_type[None, :]
    tile_type_one_hot = F.one_hot(tile_type.flatten(), len(type_rel)).float()
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
    n_positions, n_tiles = height * width, len(window_mask)
    chunks = []
    for tiles in torch.arange(n_tiles).tensor_split(min(n_chunks, n_tiles)):
        first, last = int(tiles[0]), int(tiles[-1]) + 1
        chunks.append(TileChunk(
            _move_row_gather(_row_gather(
                query_index[first * n_queries:last * n_queries], n_positions), device),
            _move_row_gather(_row_gather(
                key_index[first * n_keys:last * n_keys], n_positions), device),
            tile_type_one_hot[first:last].to(device), window_mask[first:last].to(device)))
    outputs = _move_row_gather(_row_gather(output_index, len(query_index)), device)
    return GridPlan(tuple(chunks), outputs, query_slot.flatten().to(device), type_rel.to(device),
                    n_queries, n_keys)


def _per_tile(per_type, chunk: TileChunk):
    """(n_types, ...) -> (tiles, ...), rows picked by each tile's type.

    A one-hot matmul rather than ``index_select``: its backward (summing the
    tiles of each type) is then a GEMM instead of a serial ``index_add_``.
    """
    per_tile = chunk.tile_type_one_hot.to(per_type.dtype) @ per_type.flatten(1)
    return per_tile.view(-1, *per_type.shape[1:])


class _GatherRows(torch.autograd.Function):
    """Row gather (see :class:`RowGather`) with a sparse-matmul backward."""

    @staticmethod
    def forward(ctx, x, index, crow, col):
        ctx.save_for_backward(index, crow, col)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        index, crow, col = ctx.saved_tensors
        n_src = len(crow) - 1
        rows = grad.reshape(len(index), -1)
        if rows.device.type == 'cpu' and rows.dtype in (torch.float32, torch.float64):
            with warnings.catch_warnings():   # "sparse CSR support is in beta"
                warnings.simplefilter('ignore', UserWarning)
                scatter = torch.sparse_csr_tensor(crow, col, rows.new_ones(len(col)),
                                                  size=(n_src, len(index)))
            grad_x = scatter @ rows
        else:
            grad_x = rows.new_zeros(n_src, rows.shape[1]).index_add_(0, index, rows)
        return grad_x.view(n_src, *grad.shape[1:]), None, None, None


def _gather_rows(x, gather: RowGather):
    return _GatherRows.apply(x, gather.index, gather.crow, gather.col)


def _positions(x, pad=0):
    """(B, heads, H, W, D) -> (H * W, B, heads, D + pad), contiguous."""
    x = x.permute(2, 3, 0, 1, 4).flatten(0, 1)
    return F.pad(x, (0, pad)) if pad else x.contiguous()


def _to_tiles(x, block):
    """(n_tiles * block, B, heads, C) -> (n_tiles, B * heads, block, C), a view."""
    _, batch, heads, channels = x.shape
    return x.view(-1, block, batch * heads, channels).transpose(1, 2)


def na2d_halo(query, key, value, kernel_size, dilation, rpb, scale, dropout_p=0.0,
              tile=DEFAULT_TILE):
    """Neighbourhood attention by halo tiles; arguments as :func:`nat_mm.na2d`
    (already validated). ``tile`` is the query tile side (int or (h, w)).

    Layout: positions first, ``(H * W, B, heads, C)``, so that every gather
    copies whole rows of ``B * heads * C`` floats and the tiles reach SDPA as
    ``(tiles, B * heads, T, C)`` views, with one window mask per tile
    broadcast over batch and heads. Large maps go through SDPA in chunks of
    tiles: autograd then runs each chunk's SDPA backward and gather backward
    before the next, so only one chunk's key/value gradients exist at a time.
    """
    batch, heads, height, width, head_dim = query.shape
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    table = None if rpb is None else F.pad(rpb, (0, 1, 0, 1)).flatten(1)   # (heads, 4K^2)
    fold_bias = table is not None and table.requires_grad and torch.is_grad_enabled()
    halo_floats = (batch * heads * height * width * (tile_h + kernel_size - 1) ** 2
                   * (head_dim + fold_bias * tile_h * tile_w) // (tile_h * tile_w))
    plan = grid_plan(height, width, kernel_size, dilation, tile_h, tile_w, query.device,
                     n_chunks=-(-halo_floats // CHUNK_FLOATS))
    n_queries, n_keys = plan.n_queries, plan.n_keys
    dropout_p = dropout_p if torch.is_grad_enabled() else 0.0

    if fold_bias:
        # Fold the bias into the dot product (see the module docstring): query
        # channels [q, e_slot / scale], key channels [k, bias[:, key]], value
        # channels [v, 0].
        one_hot = F.one_hot(plan.query_slot, n_queries).to(query.dtype) / scale
        query = torch.cat([query.permute(2, 3, 0, 1, 4).flatten(0, 1),
                           one_hot[:, None, None].expand(-1, batch, heads, -1)], dim=-1)
        key, value = _positions(key), _positions(value, pad=n_queries)
        bias = table[:, plan.type_rel].to(query.dtype).permute(1, 3, 0, 2)   # (types, Tk, heads, Tq)
    else:
        query, key, value = _positions(query), _positions(key), _positions(value)
        if table is not None:
            bias = table[:, plan.type_rel].to(query.dtype).transpose(0, 1)   # (types, heads, Tq, Tk)

    outputs = []
    for chunk in plan.chunks:
        q = _to_tiles(_gather_rows(query, chunk.queries), n_queries)
        k = _gather_rows(key, chunk.keys)
        v = _to_tiles(_gather_rows(value, chunk.keys), n_keys)
        mask = chunk.window_mask.to(query.dtype)                     # (tiles, 1, Tq, Tk)
        if fold_bias:
            chunk_bias = _per_tile(bias, chunk)[:, :, None]              # (tiles, Tk, 1, heads, Tq)
            k = k.view(-1, n_keys, batch, heads, head_dim)
            k = torch.cat([k, chunk_bias.expand(-1, -1, batch, -1, -1)], dim=-1).flatten(0, 1)
        elif table is not None:
            chunk_bias = _per_tile(bias, chunk)[:, None].expand(-1, batch, -1, -1, -1)
            mask = (mask[:, None] + chunk_bias).flatten(1, 2)            # (tiles, B*heads, Tq, Tk)
        out = F.scaled_dot_product_attention(q, _to_tiles(k, n_keys), v, attn_mask=mask,
                                             dropout_p=dropout_p, scale=scale)
        # (tiles, B * heads, Tq, C) -> (tiles * Tq, B, heads, C)
        outputs.append(out.transpose(1, 2).reshape(-1, batch, heads, out.shape[-1]))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    out = _gather_rows(out[..., :head_dim], plan.outputs)
    return out.view(height, width, batch, heads, head_dim).permute(2, 3, 0, 1, 4)
