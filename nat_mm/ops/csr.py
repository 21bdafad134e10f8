"""Neighbourhood attention as sparse (CSR) matrix products: the CPU path.

Stack the maps of every head and image as the rows of one matrix, n = heads *
B * H * W rows of head_dim. Neighbourhood attention is then attention with a
fixed sparsity pattern: row i attends exactly to the K*K rows of its window
(NATTEN's windows, shifted at the borders, strided by the dilation), so the
pattern is an (n, n) CSR matrix with K*K entries per row. The operator becomes

    forward   S = bias + scale * (q k^T sampled at the pattern)   sampled_addmm
              P = softmax of each row's K*K entries                dense (n, K*K)
              out = P v                                            CSR @ dense
    backward  dP = dout v^T sampled at the pattern; dS = softmax backward
              dq = scale * dS k,  dk = scale * dS^T q,  dv = P^T dout

where the transposed products use the transposed pattern (cached), whose
values are a fixed permutation of P's and dS's. Every product does exactly
the K*K dot products of each query, in ATen's/MKL's sparse kernels, and no
key or value is copied per window. The forward keeps P for the backward:
(n, K*K), 1.5x the size of q for K=7 and head_dim=32.

The relative position bias of a query depends only on where its window sits
against the borders along each axis (K "types" per axis: interior queries
are all one type), so the forward gathers one row of K*K biases per query
from a (heads * K * K, K*K) table, and the backward sums the logits'
gradients per type before scattering them onto the rpb.

The same products run on CUDA through cuSPARSE: the fallback when Triton is
missing, with a few dozen kernels per call whatever the map size. The sparse
kernels exist for float32 and float64; other dtypes are computed in float32.
"""
import functools
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .common import dropout_keep, dropout_seed, heads_first, neighborhood_indices


class CsrPlan(NamedTuple):
    """The pattern of one (batch, heads, H, W, K, dilation), rows ordered
    (head, image, y, x).

    crow, col: CSR rows/columns of the pattern, K*K entries per row (int32
        while the indices fit).
    t_crow, t_col: the transposed pattern; ``t_perm`` (int64: index_select
        is slower with int32) gives, for each of its entries, the entry of
        the pattern it transposes.
    bias_type: (n,) each row's row in the bias table, ``head * K*K +
        row_type * K + col_type``.
    type_row: (heads * B * H,) ``head * K + row_type`` of each map row;
        col_type: (W,) of each column (type = rpb index of the window's first
        key along the axis, 0 ... K-1).
    table_index: (heads * K*K * K*K,) the flat rpb index of each bias table
        entry (head, row type, col type, ky, kx).
    """
    crow: torch.Tensor
    col: torch.Tensor
    t_crow: torch.Tensor
    t_col: torch.Tensor
    t_perm: torch.Tensor
    bias_type: torch.Tensor
    type_row: torch.Tensor
    col_type: torch.Tensor
    table_index: torch.Tensor


@functools.lru_cache(maxsize=8)
def csr_plan(batch, heads, height, width, kernel_size, dilation, device='cpu'):
    """Builds the :class:`CsrPlan` on ``device`` (cached; a plan holds 16
    bytes per pattern entry, e.g. 50 MB for NAT-T's first stage at 512x512
    batch 2)."""
    window = kernel_size * kernel_size
    side = 2 * kernel_size - 1
    positions = height * width
    maps = heads * batch
    n = maps * positions
    index_dtype = torch.int32 if n * window < 2 ** 31 else torch.int64
    rows, row_bias = neighborhood_indices(height, kernel_size, dilation)
    cols, col_bias = neighborhood_indices(width, kernel_size, dilation)
    # One map's pattern (its rows are row-major positions), sorted once, then
    # tiled over the heads * batch maps.
    col = (rows[:, None, :, None] * width + cols[None, :, None, :]).flatten()
    t_perm = torch.argsort(col, stable=True)
    map_offset = torch.arange(maps)[:, None]

    def tiled(index, step, dtype=index_dtype):
        return (index[None] + map_offset * step).flatten().to(dtype)

    crow = torch.arange(0, n * window + 1, window, dtype=index_dtype)
    t_counts = torch.bincount(col, minlength=positions).repeat(maps)
    t_crow = F.pad(torch.cumsum(t_counts, 0), (1, 0)).to(index_dtype)
    row_type, col_type = row_bias[:, 0], col_bias[:, 0]
    head = torch.arange(heads)
    bias_type = (head.view(-1, 1, 1, 1) * window + row_type.view(1, 1, -1, 1) * kernel_size
                 + col_type.view(1, 1, 1, -1)).expand(heads, batch, height, width).flatten()
    type_row = (head.view(-1, 1, 1) * kernel_size + row_type.view(1, 1, -1)).expand(
        heads, batch, height).flatten()
    t = torch.arange(kernel_size)
    table_index = (head.view(-1, 1, 1, 1, 1) * side * side
                   + (t.view(-1, 1, 1, 1) + t.view(1, 1, -1, 1)) * side      # row type + ky
                   + (t.view(1, -1, 1, 1) + t.view(1, 1, 1, -1))).flatten()  # col type + kx
    plan = CsrPlan(crow, tiled(col, positions), t_crow, tiled(t_perm // window, positions),
                   tiled(t_perm, positions * window, torch.int64), bias_type, type_row,
                   col_type.clone(), table_index)
    return CsrPlan(*(index.to(device) for index in plan))


def csr_pattern(crow, col, values, n):
    """The (n, n) CSR matrix with ``values`` (a view, not a copy)."""
    with warnings.catch_warnings():   # "sparse CSR support is in beta"
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=(n, n), check_invariants=False)


def _rows(x):
    """(B, heads, H, W, D) -> (heads * B * H * W, D), contiguous."""
    return heads_first(x).view(-1, x.shape[-1])


class _CsrAttention(torch.autograd.Function):
    """Neighbourhood attention by sparse products; saves q, k, v and P.

    Called with autocast off and float32/float64 inputs (:func:`na2d_csr`)."""

    @staticmethod
    def forward(ctx, query, key, value, rpb, kernel_size, dilation, scale, dropout_p):
        batch, heads, height, width, head_dim = query.shape
        plan = csr_plan(batch, heads, height, width, kernel_size, dilation, query.device)
        window = kernel_size * kernel_size
        q, k, v = _rows(query), _rows(key), _rows(value)
        n = len(q)
        if rpb is None:
            logits = q.new_zeros(n, window)
        else:
            table = rpb.to(q.dtype).reshape(-1)[plan.table_index].view(-1, window)
            logits = table.index_select(0, plan.bias_type)
        # In place; beta=0 would still multiply (garbage) values by 0, hence no empty().
        scores = csr_pattern(plan.crow, plan.col, logits.view(-1), n)
        torch.sparse.sampled_addmm(scores, q, k.t(), alpha=scale, out=scores)
        weights = torch.softmax(logits, -1)
        seed = None
        if dropout_p > 0:
            seed = dropout_seed()
            kept = weights * dropout_keep(weights.shape, dropout_p, seed, weights.device)
        else:
            kept = weights
        out = v.new_empty(n, head_dim)      # (torch.mm would zero-fill it, then copy)
        torch.addmm(out, csr_pattern(plan.crow, plan.col, kept.view(-1), n), v, beta=0., out=out)
        ctx.save_for_backward(q, k, v, rpb, weights)
        ctx.shape, ctx.kernel_size, ctx.dilation = query.shape, kernel_size, dilation
        ctx.scale, ctx.dropout_p, ctx.seed = scale, dropout_p, seed
        return out.view(heads, batch, height, width, head_dim).transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_out):
        with torch.autocast(grad_out.device.type, enabled=False):
            return _CsrAttention._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        q, k, v, rpb, weights = ctx.saved_tensors
        batch, heads, height, width, head_dim = ctx.shape
        kernel_size, scale = ctx.kernel_size, ctx.scale
        plan = csr_plan(batch, heads, height, width, kernel_size, ctx.dilation, q.device)
        n, window = weights.shape
        grad = _rows(grad_out.to(q.dtype))
        grad_weights = csr_pattern(plan.crow, plan.col, torch.zeros_like(weights).view(-1), n)
        torch.sparse.sampled_addmm(grad_weights, grad, v.t(), out=grad_weights)
        grad_weights = grad_weights.values().view(n, window)
        kept = weights
        if ctx.seed is not None:
            keep = dropout_keep(weights.shape, ctx.dropout_p, ctx.seed, weights.device)
            grad_weights *= keep
            kept = weights * keep
        grad_logits = torch._softmax_backward_data(grad_weights, weights, -1, weights.dtype)

        grads = q.new_empty(3, n, head_dim)
        torch.addmm(grads[0], csr_pattern(plan.crow, plan.col, grad_logits.view(-1), n), k,
                    beta=0., alpha=scale, out=grads[0])
        # The two transposed value arrays take turns in grad_weights' buffer (no
        # longer needed) instead of two fresh (n, K*K) allocations.
        transposed_values = grad_weights.view(-1)
        transposed = csr_pattern(plan.t_crow, plan.t_col, transposed_values, n)
        torch.index_select(grad_logits.view(-1), 0, plan.t_perm, out=transposed_values)
        torch.addmm(grads[1], transposed, q, beta=0., alpha=scale, out=grads[1])
        torch.index_select(kept.view(-1), 0, plan.t_perm, out=transposed_values)
        torch.addmm(grads[2], transposed, grad, beta=0., out=grads[2])
        grad_rpb = None
        if rpb is not None and ctx.needs_input_grad[3]:
            # Sum over map rows, then columns, of one type; then onto the rpb.
            by_row = grad_logits.new_zeros(heads * kernel_size, width * window).index_add_(
                0, plan.type_row, grad_logits.view(-1, width * window))
            by_type = by_row.new_zeros(heads * kernel_size, kernel_size, window).index_add_(
                1, plan.col_type, by_row.view(heads * kernel_size, width, window))
            grad_rpb = by_type.new_zeros(rpb.numel()).index_add_(
                0, plan.table_index, by_type.flatten()).view_as(rpb).to(rpb.dtype)
        grad_query, grad_key, grad_value = (
            g.view(heads, batch, height, width, head_dim).transpose(0, 1) for g in grads)
        return grad_query, grad_key, grad_value, grad_rpb, None, None, None, None


def is_available(device_type):
    """CPU (MKL) and CUDA (cuSPARSE)."""
    return device_type in ('cpu', 'cuda')


@torch.compiler.disable   # sparse CSR tensors are opaque to the compiler
def na2d_csr(query, key, value, kernel_size, dilation, rpb, scale, dropout_p):
    """Neighbourhood attention by CSR products; arguments as :func:`nat_mm.na2d`
    (already validated). Inputs other than float32/float64 (also under
    autocast) are computed in float32; the output has the inputs' dtype."""
    dtype = query.dtype
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    if rpb is not None:
        rpb = rpb.to(compute)
    with torch.autocast(query.device.type, enabled=False):
        out = _CsrAttention.apply(query.to(compute), key.to(compute), value.to(compute), rpb,
                                  kernel_size, dilation, scale, dropout_p)
    return out.to(dtype)
