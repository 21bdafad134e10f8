"""Blocked ("halo") neighbourhood attention read from strips of key columns.

The map is cut, per dilation group, into tiles of ``Ty x Tx`` queries. Every
query's K x K window lies inside its tile's halo of ``Hy x Hx`` keys
(``Hx = Tx + K - 1``; ``Hy = Ty + K - 1`` or the whole group when that is
shorter). Each tile attends to its halo with an additive bias: the relative
position bias inside each query's window and -inf outside, so the numbers are
exactly NATTEN's.

Halos are never copied out one by one. For each row of tiles, the ``Hy`` key
rows its halos span are copied once into a *strip*, column after column
(``Hy`` keys per column; for K=7 and 4x4 tiles 2.5 copies of K instead of the
6.25 of separate 10x10 halos). A tile's halo is then ``Hx`` consecutive strip
columns and the next tile's starts ``Tx`` columns further, so the halos of all
tiles (of every row, image and head of a chunk) are one overlapping strided
view that the batched matmuls read in place. Halo columns past either end of
a group's columns hold whatever the strip has there (a neighbour's columns):
finite, and masked out. Windows shifted at a group's right border reach left
of their tile's halo; the strip's spare columns after a group's last column
hold exactly those keys (which is why ``Tx > K // 2``).

Tiles in the same row share their bias pattern, so a chunk (rows of tiles of
one border type) adds one ``(heads, tiles per row, Tq, Tk)`` bias, broadcast
over its rows and images.

The whole operator is one autograd function that saves only its inputs: the
backward re-gathers each chunk's strips and recomputes its attention weights
(as flash attention does), with batched matmuls, because it also needs the
logits' gradient, which is the relative position bias's gradient. Key and
value gradients are summed per block of strip columns by one batched matmul
over the tiles whose halos cover it (:class:`_BlockSums`), then onto
positions by ``index_add_``.

:func:`nat_mm.na2d` uses this path on CUDA (and any device but the CPU,
where :mod:`nat_mm.ops.csr` is faster); the tests run it on CPU too.
"""
import functools
from typing import NamedTuple, Optional

import torch

from .common import dropout_keep, dropout_seed, heads_first

#: Halo floats (keys of all heads and images, as if every halo were copied)
#: per chunk of tile rows. Small enough that a chunk's buffers are recycled by
#: the allocator instead of being page-faulted in anew, large enough to keep
#: the matmuls efficient.
CHUNK_FLOATS = 2 ** 21

#: Queries per tile along each axis. 4x4 tiles keep the halo overhead low:
#: (4+6)^2 / 7^2 = 2x the K*K dot products for K=7.
DEFAULT_TILE = 4


class AxisPlan(NamedTuple):
    """Tiling of the row axis, of length L (all LongTensors).

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


def _relative_index(queries, keys, group_len, kernel_size, canonical=None, real=None):
    """(T, halo) rpb index of each (query, key) pair along one axis, in group
    units, or ``2K-1`` where the key is not in the query's window (or is not
    the ``canonical`` copy of its position). Every ``real`` query (default:
    all) must find its whole window in ``keys``; padding queries some of it."""
    window_start = (queries - kernel_size // 2).clamp(min=0).clamp(max=group_len - kernel_size)
    offset = keys[None, :] - window_start[:, None]
    inside = (offset >= 0) & (offset < kernel_size)
    if canonical is not None:
        inside &= canonical[None, :]
    found = inside.sum(1)
    if real is not None:
        found = torch.where(real, found, kernel_size * (found > 0))
    if not (found == kernel_size).all():
        raise RuntimeError('nat_mm internal error: a query window is not inside its tile halo')
    return torch.where(inside, (kernel_size - 1) + keys[None, :] - queries[:, None],
                       torch.full_like(offset, 2 * kernel_size - 1))


def _group_lengths(length, dilation):
    return [(length - g + dilation - 1) // dilation for g in range(dilation)]


@functools.lru_cache(maxsize=256)
def axis_plan(length, kernel_size, dilation, tile):
    """Builds the :class:`AxisPlan` of the row axis (on CPU, cached)."""
    half = kernel_size // 2
    group_lengths = _group_lengths(length, dilation)
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
            rel.append(_relative_index(queries, keys, group_len, kernel_size))
            slot = len(query_index) * tile
            real = min(tile, group_len - first)
            output_index[group + dilation * (first + i[:real])] = slot + i[:real]
            query_index.append(group + dilation * queries)
            key_index.append(group + dilation * keys.clamp(max=group_len - 1))
    rel_types, tile_type = torch.unique(torch.stack(rel), dim=0, return_inverse=True)
    return AxisPlan(torch.cat(query_index), torch.cat(key_index), output_index,
                    tile_type, rel_types, tile, halo)


class StripAxisPlan(NamedTuple):
    """Tiling of the column (strip) axis, of length L.

    Every group gets ``n_tiles`` tiles of T columns (its last tiles padded) and
    a segment of ``n_tiles * T`` strip columns; tile c's halo is segment
    columns ``c*T - K//2 ... c*T - K//2 + halo - 1`` (reaching into the
    neighbouring segments at both ends).

    query_columns: (groups * n_tiles * T,) position of each tile query; the
        padding queries repeat the group's last position.
    key_columns: (groups * n_tiles * T,) position held by each strip column:
        the group's columns in order, then (in the padding) the columns that
        windows shifted at the right border need left of the last tile's halo.
    output_index: (L,) for each position, its slot in ``query_columns``.
    rel: (groups * n_tiles, T, halo) as :attr:`AxisPlan.rel_types`, per tile.
    """
    query_columns: torch.Tensor
    key_columns: torch.Tensor
    output_index: torch.Tensor
    rel: torch.Tensor
    tile: int
    halo: int
    n_tiles: int


@functools.lru_cache(maxsize=256)
def strip_axis_plan(length, kernel_size, dilation, tile):
    """Builds the :class:`StripAxisPlan` (on CPU, cached). ``tile`` must
    exceed ``kernel_size // 2`` (see :func:`na2d_halo`)."""
    half = kernel_size // 2
    halo = tile + kernel_size - 1
    group_lengths = _group_lengths(length, dilation)
    n_tiles = -(-max(group_lengths) // tile)
    width = n_tiles * tile
    x = torch.arange(width)
    query_columns, key_columns, rel = [], [], []
    output_index = torch.empty(length, dtype=torch.long)
    for group, group_len in enumerate(group_lengths):
        queries = x.clamp(max=group_len - 1)
        last_tile = (group_len - 1) // tile * tile
        # Past the group's end: the keys of the last tile's windows left of its halo.
        needed_from = group_len - kernel_size
        spare = torch.arange(needed_from, needed_from + width - group_len)
        keys = torch.cat([x[:group_len], spare.clamp(max=last_tile - half - 1).clamp(min=0)])
        padded_keys = torch.cat([torch.full((half,), -1), keys, torch.full((half,), -1)])
        for first in range(0, width, tile):
            halo_keys = padded_keys[first:first + halo]        # -1: another segment's column
            repeats_earlier = (halo_keys[:, None] == halo_keys[None, :]).tril(-1).any(1)
            rel.append(_relative_index(queries[first:first + tile], halo_keys, group_len,
                                       kernel_size, ~repeats_earlier & (halo_keys >= 0),
                                       x[first:first + tile] < group_len))
        output_index[group + dilation * x[:group_len]] = group * width + x[:group_len]
        query_columns.append(group + dilation * queries)
        key_columns.append(group + dilation * keys)
    return StripAxisPlan(torch.cat(query_columns), torch.cat(key_columns), output_index,
                         torch.stack(rel), tile, halo, n_tiles)


class RowChunk(NamedTuple):
    """Rows of tiles (all images and column groups) attended together.

    row_type: the rows' index into :attr:`GridPlan.rel_index`.
    query_index: (heads * rows_q,) rows in ``heads * B * H * W`` of the tile
        queries, ordered (head, tile row, image, tile in row, query column,
        query row).
    strip_index: (heads * rows_k,) rows of the strip's keys, ordered (head,
        tile row, image, strip column, halo row).
    padding_rows: rows (of one head's rows_q) that only pad a tile, or None;
        they get no gradient.
    """
    row_type: int
    query_index: torch.Tensor
    strip_index: torch.Tensor
    padding_rows: Optional[torch.Tensor]


class GridPlan(NamedTuple):
    """Tiling of a batch of H x W maps on one device.

    chunks: :class:`RowChunk` runs of tile rows.
    output_index: (heads * B * H * W,) the row of each position's output
        among the chunks' query rows (per head, concatenated in chunk order).
    rel_index: (n_row_types, tiles per row, Tq, Tk) index into the flattened
        (2K-1) x (2K-1) rpb table extended by one entry, ``(2K-1)**2``, that
        means "outside the window". Queries are ordered (column, row) in a
        tile, keys likewise in a halo.
    kernel_size: K; tile_w, halo_w, halo_h: Tx, Hx and Hy; n_queries: Tq = Ty * Tx.
    """
    kernel_size: int
    chunks: tuple
    output_index: torch.Tensor
    rel_index: torch.Tensor
    tile_w: int
    halo_w: int
    halo_h: int
    n_queries: int


@functools.lru_cache(maxsize=64)
def grid_plan(batch, heads, height, width, kernel_size, dilation, tile_h, tile_w, device,
              rows_per_chunk):
    """Builds the :class:`GridPlan` (cached per shape, device and chunk size)."""
    rows = axis_plan(height, kernel_size, dilation, tile_h)
    cols = strip_axis_plan(width, kernel_size, dilation, tile_w)
    ty, hy, tx, hx = rows.tile, rows.halo, cols.tile, cols.halo
    n_queries = ty * tx
    tiles_per_row = len(cols.rel)
    side = 2 * kernel_size - 1
    ry = rows.rel_types[:, None, None, :, None, :]      # (types, 1, 1, Ty, 1, Hy)
    rx = cols.rel[None, :, :, None, :, None]            # (1, tiles, Tx, 1, Hx, 1)
    rel_index = torch.where((ry < side) & (rx < side), ry * side + rx, side * side)
    rel_index = rel_index.reshape(len(ry), tiles_per_row, n_queries, hx * hy)

    n_positions = height * width
    image_offset = torch.arange(batch).view(1, -1, 1, 1, 1) * n_positions
    query_rows = rows.query_index.view(-1, 1, 1, 1, ty) * width
    query_cols = cols.query_columns.view(1, 1, tiles_per_row, tx, 1)
    key_rows = rows.key_index.view(-1, 1, 1, hy) * width
    key_cols = cols.key_columns.view(1, 1, -1, 1)
    row_real = torch.zeros(len(rows.query_index), dtype=torch.bool)
    row_real[rows.output_index] = True
    col_real = torch.zeros(len(cols.query_columns), dtype=torch.bool)
    col_real[cols.output_index] = True
    real = (row_real.view(-1, 1, 1, 1, ty) & col_real.view(1, 1, tiles_per_row, tx, 1))
    queries_per_row = batch * tiles_per_row * n_queries
    first_query = torch.empty(len(rows.tile_type), dtype=torch.long)   # per tile row
    n_rows = batch * n_positions

    def with_heads(index):       # rows of one head -> rows of all heads
        return (torch.arange(heads)[:, None] * n_rows + index).flatten()

    chunks, n_query_rows = [], 0
    for kind in range(len(rows.rel_types)):
        for tile_rows in (rows.tile_type == kind).nonzero().flatten().split(rows_per_chunk):
            first_query[tile_rows] = n_query_rows + torch.arange(len(tile_rows)) * queries_per_row
            n_query_rows += len(tile_rows) * queries_per_row
            query_index = (image_offset + query_rows[tile_rows] + query_cols).flatten()
            strip_index = (image_offset[..., 0] + key_rows[tile_rows] + key_cols).flatten()
            padding = (~real[tile_rows]).expand(-1, batch, -1, -1, -1).flatten()
            padding = padding.nonzero().flatten()
            chunks.append(RowChunk(
                kind, with_heads(query_index).to(device), with_heads(strip_index).to(device),
                padding.to(device) if len(padding) else None))
    row_slot, col_slot = rows.output_index[:, None], cols.output_index[None, :]
    within_row = (col_slot // tx) * n_queries + (col_slot % tx) * ty + row_slot % ty
    output_index = (first_query[row_slot // ty] + within_row).flatten()
    output_index = (output_index + torch.arange(batch)[:, None] * tiles_per_row * n_queries)
    output_index = torch.arange(heads)[:, None] * n_query_rows + output_index.flatten()
    return GridPlan(kernel_size, tuple(chunks), output_index.flatten().to(device),
                    rel_index.to(device), tx, hx, hy, n_queries)


def _row_biases(plan: GridPlan, rpb, heads, dtype, device):
    """Per row type, the bias of a row of tiles (heads, tiles per row, Tq, Tk):
    rpb (zero without one) inside each query's window, -inf outside."""
    side = 2 * plan.kernel_size - 1
    table = torch.zeros(heads, side * side + 1, dtype=dtype, device=device)
    if rpb is not None:
        table[:, :-1] = rpb.reshape(heads, -1)
    table[:, -1] = float('-inf')
    return table.index_select(1, plan.rel_index.flatten()).view(
        heads, *plan.rel_index.shape).unbind(1)


def _gather(x, index, out=None):
    """Rows ``index`` of x (heads, rows, D) seen as (heads * rows, D) ->
    (len(index), D), into ``out`` if given."""
    head_dim = x.shape[-1]
    return torch.index_select(x.view(-1, head_dim), 0, index,
                              out=None if out is None else out.view(-1, head_dim))


def _strip_halos(x, chunk: RowChunk, plan: GridPlan):
    """The chunk's halos of every tile and head, (heads * tiles, Tk, D): an
    overlapping strided view of one strip of key columns gathered from ``x``
    (heads, B * H * W, D)."""
    head_dim = x.shape[-1]
    column = plan.halo_h * head_dim                      # floats per strip column
    margin = (plan.halo_w - plan.tile_w) // 2 * plan.halo_h
    rows = len(chunk.strip_index)                       # of all heads
    strip = x.new_empty(rows + 2 * margin, head_dim)
    strip[:margin].zero_()                               # finite, masked out
    strip[margin + rows:].zero_()
    _gather(x, chunk.strip_index, strip[margin:margin + rows])
    n_tiles = rows // (plan.tile_w * plan.halo_h)
    return strip.as_strided((n_tiles, plan.halo_w * plan.halo_h, head_dim),
                            (plan.tile_w * column, head_dim, 1))


def _attention_weights(scaled_query, halos, bias):
    """softmax(scaled_query @ halos^T + bias) over the halo keys.

    scaled_query (heads * tiles, Tq, D), halos (heads * tiles, Tk, D), bias
    (heads, tiles per row, Tq, Tk) -> (heads * tiles, Tq, Tk).
    """
    logits = torch.bmm(scaled_query, halos.transpose(1, 2))
    logits.view(len(bias), -1, *bias.shape[1:]).add_(bias[:, None])
    return torch.softmax(logits, -1)


class _BlockSums:
    """Sums the per-tile products ``A_t^T @ B_t`` (A: (Tq, Tk) attention
    weights or logits' gradients; B: (Tq, D) output gradients or queries)
    onto the strip's columns with one batched matmul of inner size m * Tq,
    instead of one per tile of inner size Tq (which runs at a quarter of the
    speed on CPU) followed by a sum over overlapping halos.

    A tile's halo spans m = ceil(Hx / Tx) blocks of Tx strip columns, tile t
    starting at block t, so block b sums block b - t of the products of the
    tiles t = b-m+1 ... b. The rows of those m tiles, stacked, are the inner
    dimension. With every tile's A stored as (Tq, m blocks) plus one block of
    padding, and m - 1 zero tiles at both ends, the stacks of all blocks are
    one strided view of A (and of B).
    """

    def __init__(self, plan: GridPlan, max_tiles, head_dim, like):
        self.n_queries = plan.n_queries
        self.blocks = -(-plan.halo_w // plan.tile_w)
        self.block = plan.tile_w * plan.halo_h
        self.row = self.blocks * self.block
        self.tile_stride = self.n_queries * self.row + self.block
        self.first_rows = (plan.halo_w - plan.tile_w) // 2 * plan.halo_h
        pad = self.blocks - 1
        self.lhs = like.new_zeros((max_tiles + 2 * pad) * self.tile_stride)
        self.rhs = like.new_zeros((max_tiles + 2 * pad) * self.n_queries, head_dim)

    def right(self, n_tiles):
        """B's rows to fill, (n_tiles * Tq, D); the padding stays zero."""
        pad, n_queries = self.blocks - 1, self.n_queries
        self.rhs[(pad + n_tiles) * n_queries:(2 * pad + n_tiles) * n_queries].zero_()
        return self.rhs[pad * n_queries:(pad + n_tiles) * n_queries]

    def set_left(self, lhs):
        """Stores A (n_tiles, Tq, Tk)."""
        n_tiles, pad, stride = len(lhs), self.blocks - 1, self.tile_stride
        self.lhs[(pad + n_tiles) * stride:(2 * pad + n_tiles) * stride].zero_()
        self.lhs.as_strided(lhs.shape, (stride, self.row, 1), pad * stride).copy_(lhs)

    def strip_grads(self, n_tiles):
        """The sums on the chunk's strip, (heads * rows_k, D)."""
        n_blocks = n_tiles + self.blocks - 1
        head_dim = self.rhs.shape[1]
        lhs = self.lhs.as_strided((n_blocks, self.block, self.blocks * self.n_queries),
                                  (self.tile_stride, 1, self.row),
                                  (self.blocks - 1) * self.block)
        rhs = self.rhs.as_strided((n_blocks, self.blocks * self.n_queries, head_dim),
                                  (self.n_queries * head_dim, head_dim, 1))
        sums = torch.bmm(lhs, rhs).view(-1, head_dim)
        rows = n_tiles * self.block
        return sums[self.first_rows:self.first_rows + rows]


def _add_strip_grads(total, grad, chunk: RowChunk):
    """``total[strip_index[j]] += grad[j]``, total (heads, rows, D) seen as
    (heads * rows, D) and grad (heads * rows_k, D)."""
    total.view(-1, grad.shape[-1]).index_add_(0, chunk.strip_index, grad)


class _HaloAttention(torch.autograd.Function):
    """Neighbourhood attention over halo tiles; saves only its inputs."""

    @staticmethod
    def forward(ctx, query, key, value, rpb, plan_key, scale, dropout_p):
        plan = grid_plan(*plan_key)
        batch, heads, height, width, head_dim = query.shape
        q, k, v = heads_first(query), heads_first(key), heads_first(value)
        biases = _row_biases(plan, rpb, heads, query.dtype, query.device)
        seed = None
        if dropout_p > 0:
            seed = dropout_seed()
            generator = torch.Generator(query.device).manual_seed(seed)
        outputs = []
        for chunk in plan.chunks:
            qc = _gather(q, chunk.query_index).mul_(scale)
            weights = _attention_weights(qc.view(-1, plan.n_queries, head_dim),
                                         _strip_halos(k, chunk, plan), biases[chunk.row_type])
            if seed is not None:
                weights *= dropout_keep(weights.shape, dropout_p, generator, query.device)
            out = torch.bmm(weights, _strip_halos(v, chunk, plan))
            outputs.append(out.view(heads, -1, head_dim))
        out = _gather(torch.cat(outputs, 1), plan.output_index)
        ctx.save_for_backward(query, key, value, rpb)
        ctx.plan_key, ctx.scale, ctx.dropout_p, ctx.seed = plan_key, scale, dropout_p, seed
        return out.view(heads, batch, height, width, head_dim).transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, rpb = ctx.saved_tensors
        plan, scale = grid_plan(*ctx.plan_key), ctx.scale
        batch, heads, height, width, head_dim = query.shape
        q, k, v = heads_first(query), heads_first(key), heads_first(value)
        grad = heads_first(grad_out.to(query.dtype))
        biases = _row_biases(plan, rpb, heads, query.dtype, query.device)
        if ctx.seed is not None:
            generator = torch.Generator(query.device).manual_seed(ctx.seed)
        grad_key, grad_value = torch.zeros_like(k), torch.zeros_like(v)
        bias_grads = None
        if rpb is not None and ctx.needs_input_grad[3]:
            bias_grads = torch.zeros((heads, *plan.rel_index.shape), dtype=torch.float32,
                                     device=query.device)
        n_queries = plan.n_queries
        max_tiles = max(len(chunk.query_index) for chunk in plan.chunks) // n_queries
        value_sums = _BlockSums(plan, max_tiles, head_dim, q)     # weights^T @ grad
        key_sums = _BlockSums(plan, max_tiles, head_dim, q)       # grad_logits^T @ query
        query_grads = []
        for chunk in plan.chunks:
            n_tiles = len(chunk.query_index) // n_queries
            qc = _gather(q, chunk.query_index, key_sums.right(n_tiles))
            qc = qc.mul_(scale).view(n_tiles, n_queries, head_dim)
            grad_c = _gather(grad, chunk.query_index, value_sums.right(n_tiles))
            if chunk.padding_rows is not None:
                grad_c.view(heads, -1, head_dim).index_fill_(1, chunk.padding_rows, 0)
            grad_c = grad_c.view(n_tiles, n_queries, head_dim)
            key_halos, value_halos = _strip_halos(k, chunk, plan), _strip_halos(v, chunk, plan)
            bias = biases[chunk.row_type]
            weights = _attention_weights(qc, key_halos, bias)
            grad_weights = torch.bmm(grad_c, value_halos.transpose(1, 2))
            if ctx.seed is not None:
                keep = dropout_keep(weights.shape, ctx.dropout_p, generator, query.device)
                grad_weights *= keep
                value_sums.set_left(weights * keep)
            else:
                value_sums.set_left(weights)
            grad_logits = torch._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
            del weights, grad_weights
            grad_qc = torch.bmm(grad_logits, key_halos).mul_(scale)
            query_grads.append(grad_qc.view(heads, -1, head_dim))
            key_sums.set_left(grad_logits)
            _add_strip_grads(grad_key, key_sums.strip_grads(n_tiles), chunk)
            _add_strip_grads(grad_value, value_sums.strip_grads(n_tiles), chunk)
            if bias_grads is not None:
                bias_grads[:, chunk.row_type] += grad_logits.view(
                    heads, -1, *bias.shape[1:]).sum(1, dtype=torch.float32)
        grad_query = _gather(torch.cat(query_grads, 1), plan.output_index)
        grad_rpb = None
        if bias_grads is not None:
            flat = bias_grads.new_zeros(heads, rpb[0].numel() + 1)
            flat.index_add_(1, plan.rel_index.flatten(), bias_grads.flatten(1))
            grad_rpb = flat[:, :-1].view_as(rpb).to(rpb.dtype)

        grad_query, grad_key, grad_value = (
            x.view(heads, batch, height, width, head_dim).transpose(0, 1)
            for x in (grad_query, grad_key, grad_value))
        return grad_query, grad_key, grad_value, grad_rpb, None, None, None


def na2d_halo(query, key, value, kernel_size, dilation, rpb, scale, dropout_p=0.0,
              tile=DEFAULT_TILE):
    """Neighbourhood attention by halo tiles; arguments as :func:`nat_mm.na2d`
    (already validated). ``tile`` is the query tile side (int or (h, w); the
    width is raised to ``kernel_size // 2 + 1`` if smaller).
    ``dropout_p`` applies only while gradients are enabled (training).
    """
    batch, heads, height, width, head_dim = query.shape
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    tile_w = max(tile_w, kernel_size // 2 + 1)   # the right border's shifted windows must fit
    n_tile_cols = -(-width // (dilation * tile_w)) * dilation
    row_floats = batch * heads * n_tile_cols * (tile_h + kernel_size - 1) * (
        tile_w + kernel_size - 1) * head_dim
    rows_per_chunk = max(1, CHUNK_FLOATS // row_floats)
    plan_key = (batch, heads, height, width, kernel_size, dilation, tile_h, tile_w,
                query.device, rows_per_chunk)
    dropout_p = dropout_p if torch.is_grad_enabled() else 0.0
    return _HaloAttention.apply(query, key, value, rpb, plan_key, scale, dropout_p)
