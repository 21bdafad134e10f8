"""The fused Triton kernels of the ``'triton'`` backend (launched by :mod:`.triton_na`).

Imported only where Triton can run them (:data:`.triton_na.TRITON_UNUSABLE` is None).
The method (docs/operator.md, "Triton backend"): every dilation group is an independent
neighbourhood attention with dilation 1 on its sub-grid, so the kernels work in group
coordinates and map to the full map only to address memory. One program handles one
(image * head, tile of TY x TX queries or keys of one group); a key halo row is BLOCK_N
consecutive keys of one group row, so every dot is a legal ``tl.dot`` shape.

- :func:`na_fwd_kernel`: online softmax over the rows of the tile's key halo; saves the
  float32 log-sum-exp, not the weights.
- :func:`na_bwd_dq_kernel`: dq and the tile's partial rpb gradient (gathered onto rpb
  columns, then rows, with ``tl.gather``), written to the program's own slot; one
  ``torch.sum`` over the slots in a fixed order finishes it (deterministic, no atomics).
- :func:`na_bwd_dkv_kernel`: per key tile, the queries whose windows can hold those keys
  (one contiguous range per axis, in closed form); every key written by one program.

Addressing: each program forms int64 scalar pointers to its (image, head) and tile origin,
and int32 per-element offsets from there (registers), which requires every (H, W, head_dim)
slice of an input to span < 2**31 elements (checked by the launcher); rows of the key halo
advance a scalar pointer. Strides are passed per tensor and axis (``stride_q_batch``,
``stride_q_head``, ``stride_q_row``, ``stride_q_col``, ``stride_q_chan``, ...) and gathered
into :data:`Strides` records inside. The rpb is read with indices clamped into the table
(no mask): pairs outside a window read some entry and are selected away with the pair.
"""
from collections import namedtuple

import triton
import triton.language as tl


#: Element strides of a (B, heads, H, W, head_dim) tensor (``chan``: head_dim), or of the
#: rpb (heads, 2K-1, 2K-1) with ``batch`` and ``chan`` 0.
Strides = namedtuple('Strides', 'batch head row col chan')

#: Where one program's TY x TX tile of queries (or keys) lies: its dilation group (gy, gx),
#: the group's rows and columns (hg, wg), the group coords (y0, x0) of its first item.
TileOrigin = namedtuple('TileOrigin', 'gy gx hg wg y0 x0')

#: A :data:`TileOrigin` with its items: every item's group coords iy, ix (TY * TX,), whether
#: it exists (ok), and the map row and column of the first item (row0, col0).
Tile = namedtuple('Tile', 'gy gx hg wg y0 x0 iy ix ok row0 col0')

#: The BLOCK_N columns of a tile's key halo: the first one kc0 (group units), all of them
#: kc, which keys and channels exist (kv_mask, (BLOCK_N, BLOCK_D)), the offsets of a halo
#: row's keys and values from the row's pointer, and which (query, halo column) pairs lie in
#: the query's window (col_in, (TY * TX, BLOCK_N)).
HaloColumns = namedtuple('HaloColumns', 'kc0 kc kv_mask k_off v_off col_in')

#: The rows r_lo .. r_hi - 1 (group units) of a tile's key halo: the key and value pointers
#: of row r_lo, and the pointer steps from one row to the next.
HaloRows = namedtuple('HaloRows', 'r_lo r_hi k_row v_row k_step v_step')


@triton.jit
def _win_start(i, length, KS: tl.constexpr):
    """First key (group units) of the window of query ``i``."""
    return tl.minimum(tl.maximum(i - KS // 2, 0), length - KS)


@triton.jit
def _program_map(heads):
    """(b, h, bh) of this program's map: grid axes 1 and 2 together number
    the B * heads maps (axis 2 > 1 only past CUDA's 65535 limit on axis 1)."""
    bh = tl.program_id(1) + tl.program_id(2) * tl.num_programs(1)
    return bh // heads, bh % heads, bh


@triton.jit
def _tile_origin(pid, tiles_x, tiles, H, W, DIL, TY: tl.constexpr, TX: tl.constexpr):
    """The :data:`TileOrigin` of program ``pid``'s tile."""
    g = pid // tiles
    t = pid % tiles
    gy = g // DIL
    gx = g % DIL
    hg = (H - gy + DIL - 1) // DIL
    wg = (W - gx + DIL - 1) // DIL
    return TileOrigin(gy, gx, hg, wg, (t // tiles_x) * TY, (t % tiles_x) * TX)


@triton.jit
def _base(ptr, b, h, row, col, strides):
    """Scalar pointer to element (b, h, row, col, 0) of a strided tensor,
    in int64 (the per-element offsets added to it are small int32s)."""
    return (ptr + b.to(tl.int64) * strides.batch + h.to(tl.int64) * strides.head
            + row.to(tl.int64) * strides.row + col.to(tl.int64) * strides.col)


@triton.jit
def _tile(pid, tiles_x, tiles, H, W, DIL, TY: tl.constexpr, TX: tl.constexpr):
    """The :data:`Tile` of program ``pid``: TY x TX queries."""
    o = _tile_origin(pid, tiles_x, tiles, H, W, DIL, TY, TX)
    m = tl.arange(0, TY * TX)
    iy = o.y0 + m // TX
    ix = o.x0 + m % TX
    ok = (iy < o.hg) & (ix < o.wg)
    return Tile(o.gy, o.gx, o.hg, o.wg, o.y0, o.x0, iy, ix, ok, o.gy + DIL * o.y0,
                o.gx + DIL * o.x0)


@triton.jit
def _channels(ok, D, BLOCK_D: tl.constexpr):
    """The channels d (BLOCK_D,), which exist (d_ok), and the (TY * TX, BLOCK_D) mask of
    the existing values of the items where ``ok``."""
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    return d, d_ok, ok[:, None] & d_ok[None, :]


@triton.jit
def _load_tile(ptr, b, h, tile, d, mask, DIL, strides):
    """The (TY * TX, BLOCK_D) values of a :data:`Tile` of a strided (B, heads, H, W, D)
    tensor, 0 where ``mask`` is False."""
    return tl.load(_base(ptr, b, h, tile.row0, tile.col0, strides)
                   + (DIL * (tile.iy - tile.y0))[:, None] * strides.row
                   + (DIL * (tile.ix - tile.x0))[:, None] * strides.col
                   + d[None, :] * strides.chan, mask=mask, other=0.0)


@triton.jit
def _halo_columns(tile, sx, d, d_ok, DIL, k_strides, v_strides, KS: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    """The :data:`HaloColumns` of a :data:`Tile` of queries whose windows start at
    columns ``sx``."""
    kc0 = _win_start(tile.x0, tile.wg, KS)
    kc = kc0 + tl.arange(0, BLOCK_N)
    kv_mask = (kc < tile.wg)[:, None] & d_ok[None, :]
    k_off = (DIL * (kc - tile.x0))[:, None] * k_strides.col + d[None, :] * k_strides.chan
    v_off = (DIL * (kc - tile.x0))[:, None] * v_strides.col + d[None, :] * v_strides.chan
    col_in = ((kc[None, :] >= sx[:, None]) & (kc[None, :] < sx[:, None] + KS)
              & tile.ok[:, None])
    return HaloColumns(kc0, kc, kv_mask, k_off, v_off, col_in)


@triton.jit
def _halo_rows(K, V, b, h, tile, DIL, k_strides, v_strides, KS: tl.constexpr,
               TY: tl.constexpr):
    """The :data:`HaloRows` of a :data:`Tile` of queries."""
    r_lo = _win_start(tile.y0, tile.hg, KS)
    r_hi = _win_start(tl.minimum(tile.y0 + TY - 1, tile.hg - 1), tile.hg, KS) + KS
    k_row = _base(K, b, h, tile.gy + DIL * r_lo, tile.col0, k_strides)
    v_row = _base(V, b, h, tile.gy + DIL * r_lo, tile.col0, v_strides)
    k_step = tl.cast(k_strides.row, tl.int64) * DIL
    v_step = tl.cast(v_strides.row, tl.int64) * DIL
    return HaloRows(r_lo, r_hi, k_row, v_row, k_step, v_step)


@triton.jit
def _halo_row_logits(q, k_ptrs, v_ptrs, cols, scale, r, sy, qy, qx, rpb_head, rpb_strides,
                     KS: tl.constexpr, HAS_RPB: tl.constexpr, UPCAST: tl.constexpr):
    """Halo row ``r`` (:data:`HaloColumns` ``cols``) against a tile of queries q whose
    windows start at rows ``sy``: its keys and values (BLOCK_N, BLOCK_D), the scaled
    logits plus rpb (TY * TX, BLOCK_N) and which of them lie in their query's window
    (ok); the logits outside it are not masked here."""
    k = tl.load(k_ptrs, mask=cols.kv_mask, other=0.0)
    v = tl.load(v_ptrs, mask=cols.kv_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q, tl.trans(k), input_precision='ieee') * scale
    ok = cols.col_in & ((r >= sy) & (r < sy + KS))[:, None]
    if HAS_RPB:
        # indices clamped into the table, no mask: pairs outside the
        # windows read some entry, selected away by the caller
        rpb_row = tl.minimum(tl.maximum((KS - 1) + r - qy, 0), 2 * KS - 2) * rpb_strides.row
        rpb_col = tl.minimum(tl.maximum((KS - 1) + cols.kc[None, :] - qx[:, None], 0),
                             2 * KS - 2) * rpb_strides.col
        s += tl.load(rpb_head + rpb_row[:, None] + rpb_col).to(tl.float32)
    return k, v, s, ok


@triton.jit
def _keep(seed, bh, row, col, ny, nx, H, W, dropout_p, KS: tl.constexpr):
    """Dropout keep mask of (query (row, col) of map bh, neighbour (ny, nx)):
    Philox keyed on the global (query, neighbour) index, in int32
    (wrapping: unique below 2**31 query-neighbour pairs)."""
    offs = ((bh * H + row) * W + col) * (KS * KS) + ny * KS + nx
    return tl.rand(seed, offs) >= dropout_p


@triton.jit
def na_fwd_kernel(
        Q, K, V, RPB, O, LSE,
        stride_q_batch, stride_q_head, stride_q_row, stride_q_col, stride_q_chan,
        stride_k_batch, stride_k_head, stride_k_row, stride_k_col, stride_k_chan,
        stride_v_batch, stride_v_head, stride_v_row, stride_v_col, stride_v_chan,
        stride_rpb_head, stride_rpb_row, stride_rpb_col,
        batch, heads, H, W, D, DIL, tiles_x, tiles, scale, dropout_p, seed,
        KS: tl.constexpr, TY: tl.constexpr, TX: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr, DROPOUT: tl.constexpr,
        UPCAST: tl.constexpr):
    """Forward: O (B * heads, H, W, D) and LSE (B * heads, H * W), both contiguous."""
    q_strides = Strides(stride_q_batch, stride_q_head, stride_q_row, stride_q_col, stride_q_chan)
    k_strides = Strides(stride_k_batch, stride_k_head, stride_k_row, stride_k_col, stride_k_chan)
    v_strides = Strides(stride_v_batch, stride_v_head, stride_v_row, stride_v_col, stride_v_chan)
    rpb_strides = Strides(0, stride_rpb_head, stride_rpb_row, stride_rpb_col, 0)
    b, h, bh = _program_map(heads)
    if b >= batch:
        return
    tile = _tile(tl.program_id(0), tiles_x, tiles, H, W, DIL, TY, TX)
    qy, qx = tile.iy, tile.ix
    d, d_ok, qd_mask = _channels(tile.ok, D, BLOCK_D)
    q = _load_tile(Q, b, h, tile, d, qd_mask, DIL, q_strides)
    if UPCAST:
        q = q.to(tl.float32)
    sy = _win_start(qy, tile.hg, KS)
    sx = _win_start(qx, tile.wg, KS)
    cols = _halo_columns(tile, sx, d, d_ok, DIL, k_strides, v_strides, KS, BLOCK_N)
    rows = _halo_rows(K, V, b, h, tile, DIL, k_strides, v_strides, KS, TY)
    k_row, v_row = rows.k_row, rows.v_row
    rpb_head = RPB + h.to(tl.int64) * rpb_strides.head

    m_i = tl.full([TY * TX], float('-inf'), tl.float32)
    l_i = tl.zeros([TY * TX], tl.float32)
    acc = tl.zeros([TY * TX, BLOCK_D], tl.float32)
    for r in range(rows.r_lo, rows.r_hi):
        k, v, s, ok = _halo_row_logits(q, k_row + cols.k_off, v_row + cols.v_off, cols, scale,
                                       r, sy, qy, qx, rpb_head, rpb_strides, KS, HAS_RPB,
                                       UPCAST)
        s = tl.where(ok, s, float('-inf'))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_use = tl.where(m_new == float('-inf'), 0.0, m_new)
        alpha = tl.exp(m_i - m_use)
        p = tl.exp(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:
            keep = _keep(seed, bh, (tile.gy + DIL * qy)[:, None], (tile.gx + DIL * qx)[:, None],
                         (r - sy)[:, None], cols.kc[None, :] - sx[:, None], H, W, dropout_p,
                         KS)
            p = tl.where(keep, p / (1.0 - dropout_p), 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision='ieee')
        m_i = m_new
        k_row += rows.k_step
        v_row += rows.v_step
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    out = acc / l_safe[:, None]
    # O and LSE are contiguous (B * heads, H, W[, D]): this tile's offsets from its origin
    o_off = DIL * ((qy - tile.y0) * W + (qx - tile.x0))
    o_base = (bh.to(tl.int64) * H + tile.row0) * W + tile.col0
    tl.store(O + o_base * D + o_off[:, None] * D + d[None, :], out.to(O.dtype.element_ty),
             mask=qd_mask)
    lse = tl.where(m_i == float('-inf'), 0.0, m_i) + tl.log(l_safe)
    tl.store(LSE + o_base + o_off, lse, mask=tile.ok)


@triton.jit
def na_bwd_dq_kernel(
        Q, K, V, RPB, O, DO, LSE, DELTA, DQ, DRPB,
        stride_q_batch, stride_q_head, stride_q_row, stride_q_col, stride_q_chan,
        stride_k_batch, stride_k_head, stride_k_row, stride_k_col, stride_k_chan,
        stride_v_batch, stride_v_head, stride_v_row, stride_v_col, stride_v_chan,
        stride_rpb_head, stride_rpb_row, stride_rpb_col,
        stride_do_batch, stride_do_head, stride_do_row, stride_do_col, stride_do_chan,
        batch, heads, H, W, D, DIL, tiles_x, tiles, scale, dropout_p, seed,
        KS: tl.constexpr, TY: tl.constexpr, TX: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, HAS_RPB: tl.constexpr,
        DROPOUT: tl.constexpr, UPCAST: tl.constexpr):
    """Backward, per query tile: DELTA (like LSE), DQ (like O) and this program's rpb
    gradient slot of DRPB (B * heads, programs, BLOCK_R, BLOCK_R)."""
    q_strides = Strides(stride_q_batch, stride_q_head, stride_q_row, stride_q_col, stride_q_chan)
    k_strides = Strides(stride_k_batch, stride_k_head, stride_k_row, stride_k_col, stride_k_chan)
    v_strides = Strides(stride_v_batch, stride_v_head, stride_v_row, stride_v_col, stride_v_chan)
    rpb_strides = Strides(0, stride_rpb_head, stride_rpb_row, stride_rpb_col, 0)
    do_strides = Strides(stride_do_batch, stride_do_head, stride_do_row, stride_do_col,
                         stride_do_chan)
    b, h, bh = _program_map(heads)
    if b >= batch:
        return
    pid = tl.program_id(0)
    tile = _tile(pid, tiles_x, tiles, H, W, DIL, TY, TX)
    qy, qx = tile.iy, tile.ix
    d, d_ok, qd_mask = _channels(tile.ok, D, BLOCK_D)
    q = _load_tile(Q, b, h, tile, d, qd_mask, DIL, q_strides)
    do = _load_tile(DO, b, h, tile, d, qd_mask, DIL, do_strides)
    o_off = DIL * ((qy - tile.y0) * W + (qx - tile.x0))
    o_base = (bh.to(tl.int64) * H + tile.row0) * W + tile.col0
    o = tl.load(O + o_base * D + o_off[:, None] * D + d[None, :], mask=qd_mask, other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)
    tl.store(DELTA + o_base + o_off, delta, mask=tile.ok)
    lse = tl.load(LSE + o_base + o_off, mask=tile.ok, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    sy = _win_start(qy, tile.hg, KS)
    sx = _win_start(qx, tile.wg, KS)
    cols = _halo_columns(tile, sx, d, d_ok, DIL, k_strides, v_strides, KS, BLOCK_N)
    rows = _halo_rows(K, V, b, h, tile, DIL, k_strides, v_strides, KS, TY)
    k_row, v_row = rows.k_row, rows.v_row
    rpb_head = RPB + h.to(tl.int64) * rpb_strides.head
    # rpb gradient: the column of pair (query m, key j) is (K-1) + kc0 + j - qx, so
    # column c of query m gathers key j = c - (K-1) - kc0 + qx; its row is
    # (K-1) + r - qy, so row R of the rpb gathers query row (K-1) + r - y0 - R
    rr = tl.arange(0, BLOCK_R)
    j_of_c = rr[None, :] - (KS - 1) - cols.kc0 + qx[:, None]
    j_ok = (j_of_c >= 0) & (j_of_c < BLOCK_N)
    j_of_c = tl.where(j_ok, j_of_c, 0)

    dq = tl.zeros([TY * TX, BLOCK_D], tl.float32)
    drpb = tl.zeros([BLOCK_R, BLOCK_R], tl.float32)
    for r in range(rows.r_lo, rows.r_hi):
        k, v, s, ok = _halo_row_logits(q, k_row + cols.k_off, v_row + cols.v_off, cols, scale,
                                       r, sy, qy, qx, rpb_head, rpb_strides, KS, HAS_RPB,
                                       UPCAST)
        p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision='ieee')
        if DROPOUT:
            keep = _keep(seed, bh, (tile.gy + DIL * qy)[:, None], (tile.gx + DIL * qx)[:, None],
                         (r - sy)[:, None], cols.kc[None, :] - sx[:, None], H, W, dropout_p,
                         KS)
            dp = tl.where(keep, dp / (1.0 - dropout_p), 0.0)
        ds = tl.where(ok, p * (dp - delta[:, None]), 0.0)
        dq += tl.dot(ds.to(k.dtype), k, input_precision='ieee')
        if HAS_RPB:
            by_col = tl.where(j_ok, tl.gather(ds, j_of_c, 1), 0.0)
            by_col = tl.sum(tl.reshape(by_col, (TY, TX, BLOCK_R)), axis=1)
            yl = ((KS - 1) + r - tile.y0) - rr
            yl_ok = (yl >= 0) & (yl < TY)
            rows_of = tl.broadcast_to(tl.where(yl_ok, yl, 0)[:, None], (BLOCK_R, BLOCK_R))
            drpb += tl.where(yl_ok[:, None], tl.gather(by_col, rows_of, 0), 0.0)
        k_row += rows.k_step
        v_row += rows.v_step
    tl.store(DQ + o_base * D + o_off[:, None] * D + d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=qd_mask)
    if HAS_RPB:
        slot = (bh.to(tl.int64) * tl.num_programs(0) + pid) * (BLOCK_R * BLOCK_R)
        tl.store(DRPB + slot + rr[:, None] * BLOCK_R + rr[None, :], drpb)


@triton.jit
def _first_query(k, KS: tl.constexpr):
    """First query (group units) whose window holds key ``k``."""
    return tl.where(k <= KS - 1, 0, k - KS // 2)


@triton.jit
def _last_query(k, length, KS: tl.constexpr):
    """Last query (group units) whose window holds key ``k``."""
    return tl.where(k >= length - KS, length - 1, k + KS // 2)


@triton.jit
def na_bwd_dkv_kernel(
        Q, K, V, RPB, DO, LSE, DELTA, DK, DV,
        stride_q_batch, stride_q_head, stride_q_row, stride_q_col, stride_q_chan,
        stride_k_batch, stride_k_head, stride_k_row, stride_k_col, stride_k_chan,
        stride_v_batch, stride_v_head, stride_v_row, stride_v_col, stride_v_chan,
        stride_rpb_head, stride_rpb_row, stride_rpb_col,
        stride_do_batch, stride_do_head, stride_do_row, stride_do_col, stride_do_chan,
        batch, heads, H, W, D, DIL, tiles_x, tiles, scale, dropout_p, seed,
        KS: tl.constexpr, TY: tl.constexpr, TX: tl.constexpr, BLOCK_Q: tl.constexpr,
        BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr, DROPOUT: tl.constexpr,
        UPCAST: tl.constexpr):
    """Backward, per key tile: DK and DV (like O)."""
    k_strides = Strides(stride_k_batch, stride_k_head, stride_k_row, stride_k_col, stride_k_chan)
    v_strides = Strides(stride_v_batch, stride_v_head, stride_v_row, stride_v_col, stride_v_chan)
    b, h, bh = _program_map(heads)
    if b >= batch:
        return
    # written out rather than through _tile / _load_tile: with those, Triton 3.6 / 3.7
    # allocate a few more registers here (4-byte spills at head_dim 128 on sm_86)
    o = _tile_origin(tl.program_id(0), tiles_x, tiles, H, W, DIL, TY, TX)
    gy, gx, hg, wg, y0, x0 = o.gy, o.gx, o.hg, o.wg, o.y0, o.x0
    m = tl.arange(0, TY * TX)
    ky = y0 + m // TX
    kx = x0 + m % TX
    k_ok = (ky < hg) & (kx < wg)
    row0 = gy + DIL * y0
    col0 = gx + DIL * x0
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    kd_mask = k_ok[:, None] & d_ok[None, :]
    k = tl.load(_base(K, b, h, row0, col0, k_strides)
                + (DIL * (ky - y0))[:, None] * stride_k_row
                + (DIL * (kx - x0))[:, None] * stride_k_col
                + d[None, :] * stride_k_chan, mask=kd_mask, other=0.0)
    v = tl.load(_base(V, b, h, row0, col0, v_strides)
                + (DIL * (ky - y0))[:, None] * stride_v_row
                + (DIL * (kx - x0))[:, None] * stride_v_col
                + d[None, :] * stride_v_chan, mask=kd_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([TY * TX, BLOCK_D], tl.float32)
    dv = tl.zeros([TY * TX, BLOCK_D], tl.float32)
    y_last = tl.minimum(y0 + TY - 1, hg - 1)
    x_last = tl.minimum(x0 + TX - 1, wg - 1)
    c_lo = _first_query(x0, KS)
    c_hi = _last_query(x_last, wg, KS)
    r_lo = _first_query(y0, KS)
    r_hi = _last_query(y_last, hg, KS) + 1
    # int64 offsets of this map's (row 0, column col0) in Q, DO and LSE
    q_tile = (b.to(tl.int64) * stride_q_batch + h.to(tl.int64) * stride_q_head
              + col0.to(tl.int64) * stride_q_col)
    do_tile = (b.to(tl.int64) * stride_do_batch + h.to(tl.int64) * stride_do_head
               + col0.to(tl.int64) * stride_do_col)
    o_map = bh.to(tl.int64) * H * W + col0
    rpb_head = RPB + h.to(tl.int64) * stride_rpb_head
    rows = r_hi - r_lo
    # one flat loop over (chunk of BLOCK_Q query columns, query row): a
    # nested loop keeps the chunk's tensors live across the inner one and
    # costs registers; helpers are not called in the loop (slow under the
    # interpreter)
    for it in range(0, rows * tl.cdiv(c_hi + 1 - c_lo, BLOCK_Q)):
        qy = r_lo + it % rows
        qx = c_lo + (it // rows) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q_ok = qx <= c_hi
        sx = tl.minimum(tl.maximum(qx - KS // 2, 0), wg - KS)
        sy = tl.minimum(tl.maximum(qy - KS // 2, 0), hg - KS)
        ok = (k_ok[:, None] & q_ok[None, :] & (kx[:, None] >= sx[None, :])
              & (kx[:, None] < sx[None, :] + KS) & ((ky >= sy) & (ky < sy + KS))[:, None])
        qd_mask = q_ok[:, None] & d_ok[None, :]
        q_row = (gy + DIL * qy).to(tl.int64)
        q_col = (DIL * (qx - x0))[:, None]
        q = tl.load(Q + q_tile + q_row * stride_q_row + q_col * stride_q_col
                    + d[None, :] * stride_q_chan, mask=qd_mask, other=0.0)
        do = tl.load(DO + do_tile + q_row * stride_do_row + q_col * stride_do_col
                     + d[None, :] * stride_do_chan, mask=qd_mask, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        o_off = o_map + q_row * W + (DIL * (qx - x0))
        lse = tl.load(LSE + o_off, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + o_off, mask=q_ok, other=0.0)
        s = tl.dot(k, tl.trans(q), input_precision='ieee') * scale
        if HAS_RPB:
            # indices clamped into the table, no mask: pairs outside the
            # windows read some entry, and p selects them away
            rpb_row = tl.minimum(tl.maximum((KS - 1) + ky - qy, 0), 2 * KS - 2) * stride_rpb_row
            rpb_col = tl.minimum(tl.maximum((KS - 1) + kx[:, None] - qx[None, :], 0),
                                 2 * KS - 2) * stride_rpb_col
            s += tl.load(rpb_head + rpb_row[:, None] + rpb_col).to(tl.float32)
        p = tl.where(ok, tl.exp(s - lse[None, :]), 0.0)
        dp = tl.dot(v, tl.trans(do), input_precision='ieee')
        if DROPOUT:
            keep = _keep(seed, bh, gy + DIL * qy, (gx + DIL * qx)[None, :],
                         (ky - sy)[:, None], kx[:, None] - sx[None, :], H, W,
                         dropout_p, KS)
            p_drop = tl.where(keep, p / (1.0 - dropout_p), 0.0)
            dp = tl.where(keep, dp / (1.0 - dropout_p), 0.0)
        else:
            p_drop = p
        dv += tl.dot(p_drop.to(do.dtype), do, input_precision='ieee')
        ds = tl.where(ok, p * (dp - delta[None, :]), 0.0)
        dk += tl.dot(ds.to(q.dtype), q, input_precision='ieee')
    k_base = (bh.to(tl.int64) * H + row0) * W + col0
    k_off = DIL * ((ky - y0) * W + (kx - x0))
    tl.store(DK + k_base * D + k_off[:, None] * D + d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=kd_mask)
    tl.store(DV + k_base * D + k_off[:, None] * D + d[None, :], dv.to(DV.dtype.element_ty),
             mask=kd_mask)
