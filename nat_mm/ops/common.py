"""Helpers both fast paths (:mod:`.csr`, :mod:`.halo`) share."""
import torch


def heads_first(x):
    """(B, heads, H, W, D) -> (heads, B * H * W, D), contiguous."""
    return x.transpose(0, 1).reshape(x.shape[1], -1, x.shape[-1]).contiguous()


def dropout_seed():
    """A seed for one call's attention-dropout masks, drawn from torch's
    global RNG (``torch.manual_seed`` reproduces it); the backward
    regenerates the forward's masks from it instead of saving them."""
    return int(torch.randint(2 ** 62, (), device='cpu'))


def dropout_keep(shape, dropout_p, generator, device):
    """The kept attention weights (float32), scaled by 1 / (1 - p), drawn
    from ``generator``."""
    keep = torch.rand(shape, generator=generator, device=device) >= dropout_p
    return keep / (1 - dropout_p)
