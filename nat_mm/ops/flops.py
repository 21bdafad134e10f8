"""The multiply-adds of neighbourhood attention, for MMEngine's ``FlopAnalyzer``.

The analyzer traces a model and counts convolutions and linears (one multiply-add = one
"flop"), but it cannot see inside the neighbourhood attention (fused SDPA and custom
autograd functions have no handle). Inside :func:`na2d_as_one_node` every :func:`~.na2d`
call runs as :class:`NeighborhoodAttentionOp`, an autograd Function the tracer records as
one node (:data:`NA_NODE_KIND`), and :func:`flop_handle` counts that node with
:func:`neighborhood_attention_flops`::

    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(NA_NODE_KIND, flop_handle)
    with na2d_as_one_node(), torch.no_grad():
        analyzer.total()
"""
from collections import Counter

import torch
from mmengine.analysis.jit_handles import get_shape

from .backends import Backend
from .functional import na2d, na_backend

#: The name under which the tracer records :class:`NeighborhoodAttentionOp`.
NA_NODE_KIND = 'prim::PythonOp.NeighborhoodAttentionOp'


def neighborhood_attention_flops(batch, heads, height, width, head_dim, kernel_size):
    """Multiply-adds of one :func:`~.na2d` call on (B, heads, H, W, head_dim) inputs:
    each of the H * W queries of a map meets its K * K keys in QK^T and again in AV,
    ``2 * B * H * W * K^2 * heads * head_dim`` (the dilation changes which keys, not how
    many)."""
    return 2 * batch * height * width * kernel_size ** 2 * heads * head_dim


class NeighborhoodAttentionOp(torch.autograd.Function):
    """:func:`~.na2d` as one node of a traced graph (counting only).

    ``window`` is an empty (0, K, K) tensor: it carries the kernel size to the
    flop handle, which sees only the tensor inputs. There is no backward: counting
    runs forward only.
    """

    @staticmethod
    def forward(ctx, query, key, value, window, kernel_size, dilation, rpb, scale, dropout_p):
        # The tracer records this Function as one node; tracing its inside too
        # would only slow counting down (sizes become traced values there).
        tracing_state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            with na_backend(None):      # the device's backend, not this one again
                return na2d(query, key, value, kernel_size, dilation, rpb, scale, dropout_p)
        finally:
            torch._C._set_tracing_state(tracing_state)


def _na2d_as_one_node(query, key, value, kernel_size, dilation, rpb, scale, dropout_p):
    window = query.new_empty((0, kernel_size, kernel_size))
    return NeighborhoodAttentionOp.apply(query, key, value, window, kernel_size, dilation, rpb,
                                         scale, dropout_p)


#: The backend that runs every call as :class:`NeighborhoodAttentionOp` (never registered).
COUNTING_BACKEND = Backend('flop_count', _na2d_as_one_node)


def na2d_as_one_node():
    """Context manager: within the block, every :func:`~.na2d` call runs as
    :class:`NeighborhoodAttentionOp` (same results), through the backend seam."""
    return na_backend(COUNTING_BACKEND)


def flop_handle(inputs, outputs):
    """FlopAnalyzer handle of :data:`NA_NODE_KIND`: inputs[0] is the query (B, heads, H, W,
    head_dim), inputs[3] the (0, K, K) window; counted as ``neighborhood_attention``."""
    kernel_size = get_shape(inputs[3])[-1]
    return Counter(neighborhood_attention=neighborhood_attention_flops(
        *get_shape(inputs[0]), kernel_size))
