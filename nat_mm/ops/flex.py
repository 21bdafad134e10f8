"""Neighbourhood attention on PyTorch's FlexAttention: a fast GPU path that PyTorch maintains.

``torch.nn.attention.flex_attention`` computes attention over (batch, heads, L, D) tokens
with a block-sparse mask and a score modification, compiled (Triton kernels on CUDA, C++ on
the CPU). Neighbourhood attention is attention over the H * W tokens of a map (row-major)
with

- ``mask_mod(b, h, q, k)``: key k lies in query q's window, NATTEN's rule per axis (same
  dilation group; K consecutive members of the group centred on the query, shifted inward
  at the borders);
- ``score_mod(score, b, h, q, k)``: ``scale * score + rpb[h, (K-1) + ky - qy, (K-1) + kx -
  qx]`` (group units). The rpb indices are clamped into the table:
  FlexAttention also scores the pairs its mask removes inside a partly used block, and an
  index outside the table is a hard error in the compiled CPU kernel.

Both functions read the map's geometry (H, W, K, dilation) and the scale from small tensors
they capture, not from Python numbers, so one compiled graph serves every kernel size,
dilation and scale. The block mask (which 128 x 128 blocks of (query, key) pairs hold a
window pair) is built from the windows' key indices (:func:`.common.neighborhood_indices`,
H * W * K * K of them) instead of evaluating ``mask_mod`` on all (H * W)^2 pairs, and cached
per (H, W, K, dilation, device).

Compiled per device type and signature (head_dim, dtype, heads, whether the batch is one
image, whether the map fits one block): each signature gets a function of its own, so a
graph is never recompiled for new sizes, only compiled afresh (torch 2.13's C++ code
generation fails with "C++ compile error" when it recompiles a FlexAttention graph with a
block mask for other sizes; first compiles of any sizes work). On the CPU with dynamic
shapes (one compile per signature serves every map; inference only there), on CUDA with
torch.compile's default (static shapes, dynamic after a shape changes).

Limits: no attention dropout (FlexAttention drops nothing, and dropping weights after the
softmax is not a score modification); on the CPU no backward (FlexAttention has none
there); float64 inputs are computed in float32 and returned as float64.
"""
import functools
import importlib.util
import types

import torch

from ..compat import flex_attention_unusable_reason
from .common import neighborhood_indices

#: Why this torch's FlexAttention cannot serve the backend (None: it can); looked up once, as
#: the seam asks for it on every call (inside compiled code too).
FLEX_UNUSABLE = flex_attention_unusable_reason()
if FLEX_UNUSABLE is None:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
else:  # is_available() says why
    BlockMask = flex_attention = None

#: FlexAttention's default sparse block: (query, key) blocks of this many tokens each.
BLOCK = 128

#: Whether the backend drops attention weights (the seam skips it for dropout_p > 0).
SUPPORTS_DROPOUT = False

CPU_BACKWARD_ERROR = (
    "na2d: the 'flex' backend has no backward on the CPU (PyTorch's FlexAttention runs "
    "inference only there); train on the CPU with backend='csr' (the CPU default)")
DROPOUT_ERROR = (
    "na2d: the 'flex' backend has no attention dropout (FlexAttention cannot drop weights "
    "after the softmax); pass dropout_p=0 (attn_drop=0) or use backend='triton' (CUDA) or "
    "'csr'")


def unavailable_reason(device_type):
    """Why the backend cannot run on ``device_type`` (one line), or None when it can."""
    if FLEX_UNUSABLE is not None:
        return FLEX_UNUSABLE
    if device_type == 'cuda':
        if not torch.cuda.is_available():
            return 'CUDA is not available'
        if importlib.util.find_spec('triton') is None:
            return 'FlexAttention on CUDA is compiled by Triton, which is not installed'
        return None
    if device_type == 'cpu':
        return None
    return f'FlexAttention does not run on {device_type!r} devices'


def is_available(device_type):
    """CUDA (with Triton) and the CPU (forward only), where torch has FlexAttention."""
    return unavailable_reason(device_type) is None


def _axis_pair(query, key, length, kernel_size, dilation):
    """Along one axis, for query and key positions (tensors): whether the key lies in the
    query's window, and its rpb index (K-1) + (key - query) / dilation clamped into
    [0, 2K-2] (meaningful only inside the window)."""
    group = query % dilation
    position = query // dilation
    group_length = (length - group + dilation - 1) // dilation
    start = torch.minimum(torch.clamp(position - kernel_size // 2, min=0),
                          group_length - kernel_size)
    key_position = key // dilation
    inside = ((key % dilation == group) & (key_position >= start)
              & (key_position < start + kernel_size))
    # torch.minimum, not clamp(max=tensor): a clamp mixing a number and a tensor bound
    # reads the tensor as a Python number, which breaks the compiled graph
    bias = torch.minimum(torch.clamp(kernel_size - 1 + key_position - position, min=0),
                         2 * kernel_size - 2)
    return inside, bias


def _pair(geometry, query, key):
    """(inside, bias) along y, then x, of flat token indices ``query``, ``key`` on the map
    described by ``geometry`` = tensor([H, W, K, dilation])."""
    height, width, kernel_size, dilation = geometry[0], geometry[1], geometry[2], geometry[3]
    return (_axis_pair(query // width, key // width, height, kernel_size, dilation),
            _axis_pair(query % width, key % width, width, kernel_size, dilation))


def mask_mod_for(geometry):
    """FlexAttention ``mask_mod``: whether key ``kv_idx`` lies in query ``q_idx``'s window
    (flat row-major token indices) on the map ``geometry`` = tensor([H, W, K, dilation])."""
    def mask_mod(batch, head, q_idx, kv_idx):
        (inside_y, _), (inside_x, _) = _pair(geometry, q_idx, kv_idx)
        return inside_y & inside_x
    return mask_mod


def score_mod_for(geometry, rpb, scale):
    """FlexAttention ``score_mod``: ``scale * score`` plus the relative position bias
    ``rpb`` (heads, 2K-1, 2K-1) of the pair; ``scale`` a 0-d float32 tensor."""
    def score_mod(score, batch, head, q_idx, kv_idx):
        (_, bias_y), (_, bias_x) = _pair(geometry, q_idx, kv_idx)
        return score * scale + rpb[head, bias_y, bias_x]
    return score_mod


@functools.lru_cache(maxsize=16)
def block_mask(height, width, kernel_size, dilation, device):
    """The :class:`BlockMask` of an H x W map (with :func:`mask_mod_for` as its
    mask_mod) and its geometry tensor([H, W, K, dilation]) on ``device``; cached."""
    rows, _ = neighborhood_indices(height, kernel_size, dilation, device)     # (H, K)
    cols, _ = neighborhood_indices(width, kernel_size, dilation, device)      # (W, K)
    length = height * width
    blocks = -(-length // BLOCK)
    keys = rows[:, None, :, None] * width + cols[None, :, None, :]            # (H, W, K, K)
    query_block = (torch.arange(length, device=device) // BLOCK).view(height, width, 1, 1)
    used = torch.zeros(blocks, blocks, dtype=torch.bool, device=device)
    used[query_block.expand_as(keys).reshape(-1), (keys // BLOCK).reshape(-1)] = True
    kv_num_blocks = used.sum(-1, dtype=torch.int32)
    # the used key blocks of each query block first (ascending), the unused after them
    kv_indices = torch.argsort(used.to(torch.int8), dim=-1, descending=True, stable=True)
    geometry = torch.tensor([height, width, kernel_size, dilation], device=device)
    mask = BlockMask.from_kv_blocks(kv_num_blocks[None, None], kv_indices.int()[None, None],
                                    BLOCK_SIZE=BLOCK, mask_mod=mask_mod_for(geometry),
                                    seq_lengths=(length, length))
    return mask, geometry


def _flex_call(query, key, value, score_mod, block_mask):
    return flex_attention(query, key, value, score_mod=score_mod, block_mask=block_mask,
                          scale=1.0)


@functools.lru_cache(maxsize=None)
def _compiled(device_type, signature):
    """flex_attention compiled for ``device_type`` and one ``signature`` (see the module
    docstring): a copy of :func:`_flex_call` with a code object of its own, on which
    dynamo keeps this signature's graphs only."""
    name = f'_flex_call_{device_type}_{_compiled.cache_info().currsize}'
    code = _flex_call.__code__.replace(co_name=name)
    function = types.FunctionType(code, _flex_call.__globals__, name)
    return torch.compile(function, dynamic=True if device_type == 'cpu' else None)


def attend(query, key, value, kernel_size, dilation, rpb, scale):
    """Neighbourhood attention by compiled FlexAttention, with autograd where FlexAttention
    has a backward (CUDA).

    Args:
        query, key, value: (B, heads, H, W, head_dim), one dtype (not float64).
        rpb: (heads, 2K-1, 2K-1) or None.
        scale: the logit scale (a number).

    Returns:
        (B, heads, H, W, head_dim).
    """
    batch, heads, height, width, head_dim = query.shape
    mask, geometry = block_mask(height, width, kernel_size, dilation, query.device)
    if rpb is None:   # one graph for both: a zero bias costs a gather, not a compile
        rpb = query.new_zeros(heads, 2 * kernel_size - 1, 2 * kernel_size - 1)
    scale = torch.tensor(scale, dtype=torch.float32, device=query.device)
    length = height * width
    # copies, not views: torch.compile would guard on (and recompile for) a view's base sizes
    tokens = [t.reshape(batch, heads, length, head_dim).clone(memory_format=torch.contiguous_format)
              for t in (query, key, value)]
    signature = (head_dim, query.dtype, heads, batch == 1, length <= BLOCK)
    out = _compiled(query.device.type, signature)(
        *tokens, score_mod_for(geometry, rpb, scale), mask)
    return out.view(query.shape)


class _CpuInference(torch.autograd.Function):
    """FlexAttention's CPU forward (which refuses inputs that require grad), with a
    backward that says what to use instead."""

    @staticmethod
    def forward(ctx, query, key, value, rpb, kernel_size, dilation, scale):
        return attend(query.detach(), key.detach(), value.detach(),
                      kernel_size, dilation, None if rpb is None else rpb.detach(), scale)

    @staticmethod
    def backward(ctx, grad_out):
        raise RuntimeError(CPU_BACKWARD_ERROR)


def na2d_flex(query, key, value, kernel_size, dilation, rpb, scale, dropout_p=0.0):
    """Neighbourhood attention by FlexAttention; the arguments of :func:`nat_mm.na2d`
    (already validated, scale resolved).

    Args:
        query, key, value: (B, heads, H, W, head_dim), any strides.
        rpb: (heads, 2K-1, 2K-1) or None.

    Returns:
        (B, heads, H, W, head_dim) in the inputs' dtype.
    """
    if dropout_p > 0:
        raise ValueError(DROPOUT_ERROR)
    dtype = query.dtype
    if dtype == torch.float64:
        query, key, value = (t.float() for t in (query, key, value))
        rpb = None if rpb is None else rpb.float()
    if query.device.type == 'cpu':
        out = _CpuInference.apply(query, key, value, rpb, kernel_size, dilation, scale)
    else:
        out = attend(query, key, value, kernel_size, dilation, rpb, float(scale))
    return out.to(dtype)
