"""What every NATTEN API generation computes with, on nat_mm.

- :func:`neighbourhood_logits` and :func:`neighbourhood_sum`: NATTEN's *split*
  operators (``na2d_qk`` / ``na2d_av``, ``natten2dqkrpb`` / ``natten2dav``),
  whose attention weights are a tensor the caller sees and changes (softmax,
  dropout, ...). Neighbour ``n = i * K + j`` of a query is the key in row
  ``i`` and column ``j`` of its window, counted from the window's start: NATTEN's
  order. Both are the two sparse products of nat_mm's CSR backend
  (:mod:`nat_mm.ops.csr`), run separately: the logits are sampled at the
  neighbourhood pattern (``sampled_addmm``), whose entries per row are already
  in NATTEN's order, and the weighted sum is a CSR @ dense product; no key or
  value is copied per window. What the split form costs against the fused
  operator: docs/natten_compat.md.
- :func:`heads_last_na2d`: NATTEN's fused operator in its heads-last layout,
  through :func:`nat_mm.na2d` (any of its backends, with gradients).
"""
import functools

import torch

from ..ops import na2d
from ..ops.common import neighborhood_indices
from ..ops.csr import csr_pattern, csr_plan
from ..ops.functional import check_na2d_args


@functools.lru_cache(maxsize=16)
def _rpb_index(height, width, kernel_size, dilation, device):
    """(H*W*K*K,): for each query's neighbours, in NATTEN's order, the flat index
    into a (2K-1, 2K-1) rpb table."""
    _, row_bias = neighborhood_indices(height, kernel_size, dilation, device)
    _, col_bias = neighborhood_indices(width, kernel_size, dilation, device)
    return (row_bias[:, None, :, None] * (2 * kernel_size - 1)
            + col_bias[None, :, None, :]).flatten()


def _plan(shape, kernel_size, dilation, device):
    """The CSR pattern of (B, heads, H, W, ...) maps, rows in (image, head, y, x) order
    (the order of a contiguous (B, heads, H, W, D) tensor's rows)."""
    batch, heads, height, width = shape[:4]
    return csr_plan(1, batch * heads, height, width, kernel_size, dilation, device)


def _transposed(plan, values, n):
    """The transposed pattern, holding ``values`` (n, K*K) moved to their transposed places."""
    return csr_pattern(plan.t_crow, plan.t_col, values.reshape(-1).index_select(0, plan.t_perm), n)


class _Logits(torch.autograd.Function):
    """(B, heads, H, W, D) query, key [, rpb] -> (B, heads, H, W, K*K) logits."""

    @staticmethod
    def forward(ctx, query, key, rpb, kernel_size, dilation):
        batch, heads, height, width, head_dim = query.shape
        plan = _plan(query.shape, kernel_size, dilation, query.device)
        q, k = query.reshape(-1, head_dim), key.reshape(-1, head_dim)
        n = len(q)
        logits = q.new_zeros(n, kernel_size * kernel_size)
        scores = csr_pattern(plan.crow, plan.col, logits.view(-1), n)
        torch.sparse.sampled_addmm(scores, q, k.t(), out=scores)
        if rpb is not None:
            index = _rpb_index(height, width, kernel_size, dilation, query.device)
            logits.view(batch, heads, -1).add_(rpb.flatten(1).index_select(1, index))
        ctx.save_for_backward(q, k)
        ctx.shape, ctx.kernel_size, ctx.dilation = query.shape, kernel_size, dilation
        ctx.has_rpb = rpb is not None
        return logits.view(batch, heads, height, width, -1)

    @staticmethod
    def backward(ctx, grad_logits):
        q, k = ctx.saved_tensors
        batch, heads, height, width, _ = ctx.shape
        plan = _plan(ctx.shape, ctx.kernel_size, ctx.dilation, q.device)
        grad = grad_logits.reshape(len(q), -1)
        grad_query = grad_key = grad_rpb = None
        if ctx.needs_input_grad[0]:
            grad_query = (csr_pattern(plan.crow, plan.col, grad.reshape(-1), len(q)) @ k).view(
                ctx.shape)
        if ctx.needs_input_grad[1]:
            grad_key = (_transposed(plan, grad, len(q)) @ q).view(ctx.shape)
        if ctx.has_rpb and ctx.needs_input_grad[2]:
            side = 2 * ctx.kernel_size - 1
            index = _rpb_index(height, width, ctx.kernel_size, ctx.dilation, q.device)
            grad_rpb = grad.new_zeros(heads, side * side).index_add_(
                1, index, grad.view(batch, heads, -1).sum(0)).view(heads, side, side)
        return grad_query, grad_key, grad_rpb, None, None


class _WeightedSum(torch.autograd.Function):
    """(B, heads, H, W, K*K) weights, (B, heads, H, W, D) value -> (B, heads, H, W, D)."""

    @staticmethod
    def forward(ctx, attn, value, kernel_size, dilation):
        plan = _plan(value.shape, kernel_size, dilation, value.device)
        weights, v = attn.reshape(-1, kernel_size * kernel_size), value.reshape(-1, value.shape[-1])
        out = v.new_empty(v.shape)     # (torch.mm would zero-fill it first)
        torch.addmm(out, csr_pattern(plan.crow, plan.col, weights.reshape(-1), len(v)), v,
                    beta=0., out=out)
        ctx.save_for_backward(weights, v)
        ctx.kernel_size, ctx.dilation = kernel_size, dilation
        return out.view(value.shape)

    @staticmethod
    def backward(ctx, grad_out):
        weights, v = ctx.saved_tensors
        shape = grad_out.shape
        plan = _plan(shape, ctx.kernel_size, ctx.dilation, v.device)
        grad = grad_out.reshape(v.shape)
        grad_attn = grad_value = None
        if ctx.needs_input_grad[0]:
            grad_weights = torch.zeros_like(weights)
            sampled = csr_pattern(plan.crow, plan.col, grad_weights.view(-1), len(v))
            torch.sparse.sampled_addmm(sampled, grad, v.t(), out=sampled)
            grad_attn = grad_weights.view(*shape[:4], -1)
        if ctx.needs_input_grad[1]:
            grad_value = (_transposed(plan, weights, len(v)) @ grad).view(shape)
        return grad_attn, grad_value, None, None


def _sparse_dtype(dtype):
    """The dtype the sparse products run in: float32 / float64 as given, others in float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@torch.compiler.disable   # sparse CSR tensors are opaque to the compiler
def neighbourhood_logits(query, key, kernel_size, dilation, rpb=None):
    """Dot products of every query with its K*K neighbours' keys, plus the rpb.

    Args:
        query, key: (B, heads, H, W, D); the query is not scaled here (NATTEN's
            callers scale it first).
        kernel_size: odd K >= 3; dilation: d >= 1, with H, W >= K * d.
        rpb: (heads, 2K-1, 2K-1) relative position bias, or None.

    Returns:
        (B, heads, H, W, K*K) in NATTEN's neighbour order, in the query's dtype
        (float16 / bfloat16 computed in float32).
    """
    check_na2d_args(query, key, key, kernel_size, dilation, rpb)
    compute = _sparse_dtype(query.dtype)
    with torch.autocast(query.device.type, enabled=False):
        logits = _Logits.apply(query.to(compute), key.to(compute),
                               None if rpb is None else rpb.to(compute), kernel_size, dilation)
    return logits.to(query.dtype)


@torch.compiler.disable
def neighbourhood_sum(attn, value, kernel_size, dilation):
    """Every query's neighbours' values weighted by ``attn``.

    Args:
        attn: (B, heads, H, W, K*K) weights in NATTEN's neighbour order.
        value: (B, heads, H, W, D), same dtype and device.
        kernel_size, dilation: as for :func:`neighbourhood_logits`.

    Returns:
        (B, heads, H, W, D), in the value's dtype.
    """
    check_na2d_args(value, value, value, kernel_size, dilation, None)
    expected = (*value.shape[:4], kernel_size * kernel_size)
    if not isinstance(attn, torch.Tensor) or tuple(attn.shape) != expected:
        got = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
        raise ValueError(
            f'na2d_av: attn must have shape (B, heads, H, W, K*K) = {expected} for value '
            f'{tuple(value.shape)} and kernel_size {kernel_size}, got {got}')
    if attn.dtype != value.dtype or attn.device != value.device:
        raise ValueError(
            f'na2d_av: attn ({attn.dtype}, {attn.device}) and value ({value.dtype}, '
            f'{value.device}) must have the same dtype and device')
    compute = _sparse_dtype(value.dtype)
    with torch.autocast(value.device.type, enabled=False):
        out = _WeightedSum.apply(attn.to(compute), value.to(compute), kernel_size, dilation)
    return out.to(value.dtype)


def heads_last_na2d(function, query, key, value, kernel_size, dilation, rpb=None, scale=None):
    """NATTEN's fused 2-D neighbourhood attention in its layout, by :func:`nat_mm.na2d`.

    Args:
        function: the NATTEN name being served (for messages).
        query, key, value: (B, H, W, heads, D).
        kernel_size, dilation, rpb, scale: as for :func:`nat_mm.na2d`.

    Returns:
        (B, H, W, heads, D), contiguous (as NATTEN returns it).
    """
    for name, tensor in (('query', query), ('key', key), ('value', value)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 5:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise ValueError(
                f'{function}: {name} must be (B, H, W, heads, head_dim) (heads last, NATTEN '
                f'0.17+ fused layout), got {got}')
    out = na2d(*(t.permute(0, 3, 1, 2, 4) for t in (query, key, value)), kernel_size,
               dilation, rpb, scale)
    return out.permute(0, 2, 3, 1, 4).contiguous()
