"""``linear(gelu(hidden))`` that keeps only ``hidden`` for the backward.

Autograd would keep both the GELU's input and its output (the linear's
input) until the backward: 2 x hidden_dim floats per token, the largest
activations of a transformer MLP. Recomputing the GELU in the backward
halves that at the cost of one elementwise pass; results are unchanged.
"""
import torch
import torch.nn.functional as F


class _GeluLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, hidden, weight, bias):
        ctx.save_for_backward(hidden, weight, bias)
        return F.linear(F.gelu(hidden), weight, bias)

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias = ctx.saved_tensors
        # Under autocast the forward's linear ran in grad's dtype.
        act = F.gelu(hidden).to(grad.dtype)
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_act = (grad @ weight.to(grad.dtype)).to(hidden.dtype)
            grad_hidden = torch.ops.aten.gelu_backward(grad_act, hidden)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_rows.T @ act.reshape(-1, act.shape[-1])).to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0).to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias


def gelu_linear(hidden, weight, bias=None):
    """``F.linear(F.gelu(hidden), weight, bias)`` saving only ``hidden``.

    Args:
        hidden: (..., hidden_dim).
        weight: (out_dim, hidden_dim); bias: (out_dim,) or None.

    Returns:
        (..., out_dim).
    """
    return _GeluLinear.apply(hidden, weight, bias)
