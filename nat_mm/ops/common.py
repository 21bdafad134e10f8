"""Helpers the fast backends share (window indices, layout, dropout masks), and the error
they raise.

The reference (:mod:`.reference`) deliberately uses none of them.
"""
import torch


class BackendError(RuntimeError):
    """A backend cannot run these inputs on this machine (not a user error)."""


def neighborhood_indices(length: int, kernel_size: int, dilation: int, device=None):
    """Key positions and rpb indices of every query along one axis (NATTEN's windows).

    Args:
        length: number of positions L along the axis (L >= kernel_size * dilation).
        kernel_size: odd window size K.
        dilation: dilation d.

    Returns:
        (keys, bias): two LongTensors of shape (L, K). ``keys[i, t]`` is the
        position of the t-th neighbour of query i; ``bias[i, t]`` is its index
        into the (2K-1)-long rpb axis, ``(K-1) + (key - query) / d``.
    """
    i = torch.arange(length, device=device)
    group = i % dilation
    pos_in_group = i // dilation
    group_len = (length - group + dilation - 1) // dilation
    start = (pos_in_group - kernel_size // 2).clamp(min=0)
    start = torch.minimum(start, group_len - kernel_size)
    t = torch.arange(kernel_size, device=device)
    steps = start[:, None] + t[None, :]                     # (L, K), group units
    keys = group[:, None] + dilation * steps
    bias = (kernel_size - 1) + steps - pos_in_group[:, None]
    return keys, bias


def heads_first(x):
    """(B, heads, H, W, D) -> (heads, B * H * W, D), contiguous."""
    return x.transpose(0, 1).reshape(x.shape[1], -1, x.shape[-1]).contiguous()


def dropout_seed():
    """A seed for one call's attention-dropout masks, drawn from torch's
    global RNG (``torch.manual_seed`` reproduces it); the backward
    regenerates the forward's masks from it instead of saving them."""
    return int(torch.randint(2 ** 62, (), device='cpu'))


def dropout_keep(shape, dropout_p, seed, device):
    """The kept attention weights (float32), scaled by 1 / (1 - p), drawn
    from a generator on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    keep = torch.rand(shape, generator=generator, device=device) >= dropout_p
    return keep / (1 - dropout_p)
