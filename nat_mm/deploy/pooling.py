"""Adaptive average pooling that exports with dynamic input sizes.

``torch.export`` decomposes ``adaptive_avg_pool2d`` into gathers whose
window lengths are fixed at the example size: a dynamic ONNX file then reads
out of range (or averages the wrong pixels) at other sizes. UperNet's pyramid
pooling (scales 1, 2, 3, 6) is such a case. Here the pooling is two matmuls
with averaging matrices built by tensor ops from the (symbolic) input size, with
PyTorch's windows: output cell i of an axis of length n averages the inputs
``floor(i * n / out) <= y < ceil((i + 1) * n / out)``.

:func:`exportable_adaptive_pooling` swaps every ``nn.AdaptiveAvgPool2d`` of
a module for :class:`MatmulAdaptiveAvgPool2d` for the duration of an export;
eager runs keep PyTorch's own operator.
"""
import contextlib

import torch
from torch import nn


def averaging_matrix(size, out_size, like):
    """(out_size, size) matrix whose row i averages the inputs of output cell i.

    Args:
        size: input length n (int or symbolic size).
        out_size: output length (int).
        like: a tensor giving dtype and device.
    """
    cell = torch.arange(out_size, device=like.device)
    start = (cell * size) // out_size
    end = ((cell + 1) * size + out_size - 1) // out_size
    position = torch.arange(size, device=like.device)
    inside = (position >= start[:, None]) & (position < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


class MatmulAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` as ``rows @ x @ cols^T``.

    Shape: (..., H, W) -> (..., out_h, out_w); an output size of None keeps
    that axis (as in PyTorch).
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = ((output_size, output_size) if isinstance(output_size, int)
                            else tuple(output_size))

    def forward(self, x):
        out_h, out_w = self.output_size
        if out_h is not None:
            x = averaging_matrix(x.shape[-2], out_h, x) @ x
        if out_w is not None:
            x = x @ averaging_matrix(x.shape[-1], out_w, x).transpose(0, 1)
        return x


@contextlib.contextmanager
def exportable_adaptive_pooling(module):
    """Within the block, every ``nn.AdaptiveAvgPool2d`` inside ``module`` (its
    submodules, not ``module`` itself) is a :class:`MatmulAdaptiveAvgPool2d` of the same
    output size; restored after, also when the block raises."""
    swapped = []
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                swapped.append((parent, name, child))
                setattr(parent, name, MatmulAdaptiveAvgPool2d(child.output_size))
    try:
        yield module
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
