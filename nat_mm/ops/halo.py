"""Blocked ("halo") neighbourhood attention on top of fused SDPA.

The map is cut, per dilation group, into tiles of ``Ty x Tx`` queries. Every
query's K x K window lies inside its tile's halo: ``Hy x Hx`` keys with
``H* = T* + K - 1`` (or the whole group when that is shorter). Each tile
attends to its halo with an additive bias that is the relative position bias
inside each query's window and -inf outside, so the numbers are exactly
NATTEN's while only one chunk of halos (about (T+K-1)^2 / T^2 copies of its
keys and values, not K*K) exists at a time.

Tiles are grouped by *type*: tiles whose queries sit at the same place
relative to the map's borders share one (heads, Tq, Tk) bias, which SDPA
broadcasts over the group, so no per-tile bias is ever materialised. Almost
every tile of a large map is of the interior type.

The whole operator is one autograd function that saves only its inputs:
the backward re-gathers each chunk of halos and recomputes its attention
weights (as flash attention does), so a training step holds no halo copies
between forward and backward. The backward is written out with batched
matmuls because it also needs the logits' gradient, which is the relative
position bias's gradient.
"""
import functools
import warnings
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

#: Halo floats (keys of all heads and images) per chunk of tiles. Small
#: enough that a chunk's buffers are recycled by the allocator instead of
#: being page-faulted in anew, large enough to keep the matmuls efficient.
CHUNK_FLOATS = 2 ** 20

#: Queries per tile along each axis. 4x4 tiles keep the halo overhead low:
#: (4+6)^2 / 7^2 = 2x the K*K dot products for K=7.
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


class TileChunk(NamedTuple):
    """Tiles attended together; rows index the ``B * H * W`` positions of the
    batch, ordered (image, tile, query or key).

    tile_types: (n_tiles,) each tile's index into :attr:`GridPlan.type_rel`.
    shared_type: the type of every tile, or None for a mixed chunk (the
        leftovers of small types), whose bias is then materialised per tile.
    query_index: (rows_q,) the chunk's tile queries.
    key_index: (rows_k,) the chunk's halo keys.
    key_crow, key_col: CSR rows/columns of the (B * H * W, rows_k) 0/1
        matrix with a 1 at (key_index[j], j): it sums the halo copies' key and
        value gradients back onto the positions.
    padding_rows: rows of ``query_index`` that repeat another query (the
        padding of a group's last tile) or None; they get no gradient.
    """
    tile_types: torch.Tensor
    shared_type: Optional[int]
    query_index: torch.Tensor
    key_index: torch.Tensor
    key_crow: torch.Tensor
    key_col: torch.Tensor
    padding_rows: Optional[torch.Tensor]


class GridPlan(NamedTuple):
    """Tiling of a batch of H x W maps on one device.

    chunks: the tiles, in :class:`TileChunk` runs.
    output_index: (B * H * W,) the row of each position's output among the
        chunks' query rows, concatenated in chunk order.
    type_rel: (n_types, Tq, Tk) flat index into the (2K) x (2K) rpb table
        padded with a zero row and column, where index 2K-1 on either axis
        means "outside the window".
    type_mask: (n_types, Tq, Tk) float, 0 inside each query's window and
        -inf outside.
    """
    chunks: tuple
    output_index: torch.Tensor
    type_rel: torch.Tensor
    type_mask: torch.Tensor
    n_queries: int
    n_keys: int


def _tile_major(rows, cols, row_block, col_block, width):
    """Flat positions of a tiled product grid, tile by tile.

    rows (n_tile_rows * row_block,), cols (n_tile_cols * col_block,) ->
    (n_tile_rows * n_tile_cols, row_block * col_block).
    """
    grid = rows.view(-1, 1, row_block, 1) * width + cols.view(1, -1, 1, col_block)
    return grid.reshape(-1, row_block * col_block)


def _key_csr(key_index, n_positions):
    order = torch.argsort(key_index, stable=True)
    crow = F.pad(torch.cumsum(torch.bincount(key_index, minlength=n_positions), 0), (1, 0))
    return crow.int(), order.int()     # int32: what the sparse kernels use


@functools.lru_cache(maxsize=64)
def grid_plan(batch, height, width, kernel_size, dilation, tile_h, tile_w, device,
              tiles_per_chunk):
    """Builds the :class:`GridPlan` (cached per shape, device and chunk size)."""
    rows = axis_plan(height, kernel_size, dilation, tile_h)
    cols = axis_plan(width, kernel_size, dilation, tile_w)
    side = 2 * kernel_size
    ry = rows.rel_types[:, None, :, None, :, None]      # (ty, 1, Ty, 1, Hy, 1)
    rx = cols.rel_types[None, :, None, :, None, :]      # (1, tx, 1, Tx, 1, Hx)
    n_queries, n_keys = rows.tile * cols.tile, rows.halo * cols.halo
    shape = (len(rows.rel_types), len(cols.rel_types), n_queries, n_keys)
    type_rel = (ry * side + rx).reshape(shape).flatten(0, 1)
    inside = ((ry < side - 1) & (rx < side - 1)).reshape(shape).flatten(0, 1)
    type_mask = torch.zeros(inside.shape).masked_fill_(~inside, float('-inf'))
    tile_type = (rows.tile_type[:, None] * len(cols.rel_types) + cols.tile_type[None, :]).flatten()
    tile_queries = _tile_major(rows.query_index, cols.query_index, rows.tile, cols.tile, width)
    tile_keys = _tile_major(rows.key_index, cols.key_index, rows.halo, cols.halo, width)
    n_positions = height * width
    # Tile slot (tile * Tq + query) of each position's output.
    oy, ox = rows.output_index[:, None], cols.output_index[None, :]
    slot = (((oy // rows.tile) * len(cols.tile_type) + ox // cols.tile) * n_queries
            + (oy % rows.tile) * cols.tile + ox % cols.tile).flatten()
    is_real = torch.zeros(tile_queries.numel(), dtype=torch.bool)
    is_real[slot] = True
    is_real = is_real.view(-1, n_queries)
    image_offset = (torch.arange(batch) * n_positions).view(-1, 1, 1)
    # Row of each tile's first query (image 0) among all chunks' query rows,
    # and the distance between the images' copies of that row.
    tile_row = torch.empty(len(tile_type), dtype=torch.long)
    image_stride = torch.empty(len(tile_type), dtype=torch.long)
    # Types with many tiles get chunks of their own; the leftovers share mixed chunks.
    runs, leftovers = [], []
    for kind in range(len(type_rel)):
        for tiles in (tile_type == kind).nonzero().flatten().split(tiles_per_chunk):
            (runs if 2 * len(tiles) >= tiles_per_chunk else leftovers).append(tiles)
    if leftovers:
        runs.extend(torch.cat(leftovers).split(tiles_per_chunk))
    chunks, n_rows = [], 0
    for tiles in runs:
        rows_per_image = len(tiles) * n_queries
        tile_row[tiles] = n_rows + torch.arange(len(tiles)) * n_queries
        image_stride[tiles] = rows_per_image
        n_rows += batch * rows_per_image
        key_index = (image_offset + tile_keys[tiles]).flatten()
        padding = (~is_real[tiles]).expand(batch, -1, -1).flatten().nonzero().flatten()
        types = tile_type[tiles]
        shared = int(types[0]) if (types == types[0]).all() else None
        chunks.append(TileChunk(
            types.to(device), shared, (image_offset + tile_queries[tiles]).flatten().to(device),
            key_index.to(device),
            *(t.to(device) for t in _key_csr(key_index, batch * n_positions)),
            padding.to(device) if len(padding) else None))
    tile = slot // n_queries
    output_index = (tile_row[tile] + slot % n_queries
                    + torch.arange(batch)[:, None] * image_stride[tile])
    return GridPlan(tuple(chunks), output_index.flatten().to(device), type_rel.to(device),
                    type_mask.to(device), n_queries, n_keys)


def _heads_first(x):
    """(B, heads, H, W, D) -> (heads, B * H * W, D), contiguous."""
    return x.transpose(0, 1).reshape(x.shape[1], -1, x.shape[-1]).contiguous()


def _type_bias(plan, rpb, dtype):
    """Window mask plus relative position bias of every tile type:
    (n_types, heads, Tq, Tk), or (n_types, 1, Tq, Tk) without rpb."""
    if rpb is None:
        return plan.type_mask[:, None].to(dtype)
    table = F.pad(rpb.to(dtype), (0, 1, 0, 1)).flatten(1)         # (heads, 4K^2)
    return table[:, plan.type_rel].transpose(0, 1) + plan.type_mask[:, None].to(dtype)


def _chunk_bias(bias, chunk: TileChunk, batch):
    """The chunk's slice of :func:`_type_bias` for SDPA's (heads, B * tiles)
    batch: (heads|1, 1, Tq, Tk) when shared, else (heads|1, B * tiles, Tq, Tk)."""
    if chunk.shared_type is not None:
        return bias[chunk.shared_type][:, None]
    per_tile = bias.index_select(0, chunk.tile_types).transpose(0, 1)[:, None]
    return per_tile.expand(-1, batch, -1, -1, -1).flatten(1, 2)


def _add_bias_grads(total, grad_logits, chunk: TileChunk, batch):
    """Sums the logits' gradient (heads, B * tiles, Tq, Tk) per tile type into
    ``total`` (n_types, heads, Tq, Tk), float32."""
    if chunk.shared_type is not None:
        total[chunk.shared_type] += grad_logits.sum(1, dtype=torch.float32)
        return
    heads, _, *block = grad_logits.shape
    per_tile = grad_logits.view(heads, batch, -1, *block).sum(1, dtype=torch.float32)
    total.index_add_(0, chunk.tile_types, per_tile.transpose(0, 1))


def _gather(x, index, tile):
    """(heads, rows, D) -> (heads, len(index) / tile, tile, D), contiguous."""
    heads, _, head_dim = x.shape
    if heads > 4:
        return x.index_select(1, index).view(heads, -1, tile, head_dim)
    out = x.new_empty(heads, len(index), head_dim)
    for head in range(heads):     # 2-3x faster than one index_select along dim 1
        torch.index_select(x[head], 0, index, out=out[head])
    return out.view(heads, -1, tile, head_dim)


def _gather_chunk(q, k, v, chunk: TileChunk, plan: GridPlan):
    """The chunk's tile queries (heads, B * tiles, Tq, D) and halo keys and
    values (heads, B * tiles, Tk, D), from (heads, B * H * W, D) inputs."""
    return (_gather(q, chunk.query_index, plan.n_queries),
            _gather(k, chunk.key_index, plan.n_keys), _gather(v, chunk.key_index, plan.n_keys))


def _attention_weights(scaled_query, key, bias):
    """softmax(scaled_query @ key^T + bias) over the halo keys."""
    logits = scaled_query @ key.transpose(-1, -2)
    logits += bias
    return torch.softmax(logits, -1)


def _dropout_keep(shape, dropout_p, generator, device):
    """The kept attention weights of one chunk, scaled by 1 / (1 - p)."""
    keep = torch.rand(shape, generator=generator, device=device) >= dropout_p
    return keep / (1 - dropout_p)


def _add_key_grads(total, grad, chunk: TileChunk):
    """``total[:, key_index[j]] += grad[:, j]`` (heads, rows, D), summing duplicates."""
    if grad.device.type == 'cpu' and grad.dtype in (torch.float32, torch.float64):
        # A sparse matmul is several times faster than index_add_'s scatter on CPU.
        with warnings.catch_warnings():   # "sparse CSR support is in beta"
            warnings.simplefilter('ignore', UserWarning)
            scatter = torch.sparse_csr_tensor(
                chunk.key_crow, chunk.key_col, grad.new_ones(len(chunk.key_col)),
                size=(total.shape[1], grad.shape[1]))
        for head in range(len(total)):
            total[head].addmm_(scatter, grad[head])
    else:
        total.index_add_(1, chunk.key_index, grad)


class _HaloAttention(torch.autograd.Function):
    """Neighbourhood attention over halo tiles; saves only its inputs."""

    @staticmethod
    def forward(ctx, query, key, value, rpb, plan_key, scale, dropout_p):
        plan = grid_plan(*plan_key)
        batch, heads, height, width, head_dim = query.shape
        q, k, v = _heads_first(query), _heads_first(key), _heads_first(value)
        bias = _type_bias(plan, rpb, query.dtype)
        seed = None
        if dropout_p > 0:
            seed = int(torch.randint(2 ** 62, (), device='cpu'))
            generator = torch.Generator(query.device).manual_seed(seed)
        outputs = []
        for chunk in plan.chunks:
            qc, kc, vc = _gather_chunk(q, k, v, chunk, plan)
            chunk_bias = _chunk_bias(bias, chunk, batch)
            if seed is None:
                out = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=chunk_bias,
                                                     scale=scale)
            else:   # the weights exactly as the backward will recompute them
                weights = _attention_weights(qc.mul_(scale), kc, chunk_bias)
                keep = _dropout_keep(weights.shape, dropout_p, generator, query.device)
                out = (weights * keep) @ vc
            outputs.append(out.reshape(heads, -1, head_dim))
        out = torch.cat(outputs, 1).index_select(1, plan.output_index)
        ctx.save_for_backward(query, key, value, rpb)
        ctx.plan_key, ctx.scale, ctx.dropout_p, ctx.seed = plan_key, scale, dropout_p, seed
        return out.view(heads, batch, height, width, head_dim).transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, rpb = ctx.saved_tensors
        plan, scale = grid_plan(*ctx.plan_key), ctx.scale
        batch, heads, height, width, head_dim = query.shape
        q, k, v = _heads_first(query), _heads_first(key), _heads_first(value)
        grad = _heads_first(grad_out.to(query.dtype))
        bias = _type_bias(plan, rpb, query.dtype)
        if ctx.seed is not None:
            generator = torch.Generator(query.device).manual_seed(ctx.seed)
        grad_key, grad_value = torch.zeros_like(k), torch.zeros_like(v)
        bias_grads = None
        if rpb is not None and ctx.needs_input_grad[3]:
            bias_grads = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        query_grads = []
        for chunk in plan.chunks:
            qc, kc, vc = _gather_chunk(q, k, v, chunk, plan)
            qc.mul_(scale)
            grad_c = _gather(grad, chunk.query_index, plan.n_queries)
            if chunk.padding_rows is not None:
                grad_c.view(heads, -1, head_dim).index_fill_(1, chunk.padding_rows, 0)
            weights = _attention_weights(qc, kc, _chunk_bias(bias, chunk, batch))
            grad_weights = grad_c @ vc.transpose(-1, -2)
            if ctx.seed is not None:
                keep = _dropout_keep(weights.shape, ctx.dropout_p, generator, query.device)
                grad_weights *= keep
                grad_vc = (weights * keep).transpose(-1, -2) @ grad_c
            else:
                grad_vc = weights.transpose(-1, -2) @ grad_c
            grad_logits = torch._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
            del weights, grad_weights
            query_grads.append((grad_logits @ kc).mul_(scale).view(heads, -1, head_dim))
            _add_key_grads(grad_key, (grad_logits.transpose(-1, -2) @ qc).view(heads, -1, head_dim),
                           chunk)
            _add_key_grads(grad_value, grad_vc.view(heads, -1, head_dim), chunk)
            if bias_grads is not None:
                _add_bias_grads(bias_grads, grad_logits, chunk, batch)
        grad_query = torch.cat(query_grads, 1).index_select(1, plan.output_index)
        grad_rpb = None
        if bias_grads is not None:
            side = rpb.shape[-1] + 1
            table = bias_grads.new_zeros(heads, side * side)
            table.index_add_(1, plan.type_rel.flatten(),
                             bias_grads.transpose(0, 1).flatten(1))
            grad_rpb = table.view(heads, side, side)[:, :-1, :-1].to(rpb.dtype)

        grad_query, grad_key, grad_value = (
            x.view(heads, batch, height, width, head_dim).transpose(0, 1)
            for x in (grad_query, grad_key, grad_value))
        return grad_query, grad_key, grad_value, grad_rpb, None, None, None


def na2d_halo(query, key, value, kernel_size, dilation, rpb, scale, dropout_p=0.0,
              tile=DEFAULT_TILE):
    """Neighbourhood attention by halo tiles; arguments as :func:`nat_mm.na2d`
    (already validated). ``tile`` is the query tile side (int or (h, w)).
    ``dropout_p`` applies only while gradients are enabled (training).
    """
    batch, heads, height, width, head_dim = query.shape
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    halo_keys = (tile_h + kernel_size - 1) * (tile_w + kernel_size - 1)
    tiles_per_chunk = max(1, CHUNK_FLOATS // (batch * heads * halo_keys * head_dim))
    plan_key = (batch, height, width, kernel_size, dilation, tile_h, tile_w, query.device,
                tiles_per_chunk)
    dropout_p = dropout_p if torch.is_grad_enabled() else 0.0
    return _HaloAttention.apply(query, key, value, rpb, plan_key, scale, dropout_p)
