"""Inputs and comparisons the op tests share."""
from pathlib import Path

import torch

from nat_mm.ops import na2d_reference

GOLDEN_PATH = Path(__file__).resolve().parents[1] / 'data' / 'natten_0.17.5_na2d.pt'


def load_golden():
    """NATTEN 0.17.5's float64 outputs and gradients (see tests/data/README.md)."""
    return torch.load(GOLDEN_PATH, weights_only=True)


def make_qkv(batch, heads, height, width, head_dim, dtype=torch.float32, seed=0):
    """Non-contiguous q, k, v cut from one projection, as the module makes them.

    Returns (qkv, q, k, v) with qkv (B, H, W, 3, heads, D) requiring grad.
    """
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, height, width, 3, heads, head_dim, generator=gen, dtype=dtype)
    qkv.requires_grad_(True)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    return qkv, q, k, v


def make_rpb(heads, kernel, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen,
                       dtype=dtype).requires_grad_(True)


def outputs_and_grads(fn, qkv, kernel, dilation, rpb, grad_out, dtype=torch.float32):
    """(out, d qkv[, d rpb]) of ``fn`` on the q, k, v cut from ``qkv``, in ``dtype``."""
    qkv = qkv.detach().to(dtype).requires_grad_(True)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    inputs = [qkv]
    if rpb is not None:
        rpb = rpb.detach().to(dtype).requires_grad_(True)
        inputs.append(rpb)
    out = fn(q, k, v, kernel, dilation, rpb)
    return (out, *torch.autograd.grad(out, inputs, grad_out.to(dtype)))


def assert_matches_reference(fn, qkv, kernel, dilation, rpb, grad_out):
    """``fn`` in float32 against the gather reference in float64.

    Outputs and q/k/v gradients: atol 1e-5, rtol 1e-4. The rpb gradient sums
    dlogits over all B * H * W queries, so its float32 round-off grows with
    the map (about 1e-5 at 64x64 where terms cancel); it gets atol 1e-4.
    """
    fast = outputs_and_grads(fn, qkv, kernel, dilation, rpb, grad_out)
    slow = outputs_and_grads(na2d_reference, qkv, kernel, dilation, rpb, grad_out,
                             dtype=torch.float64)
    for i, (got, expected) in enumerate(zip(fast, slow)):
        atol = 1e-4 if i == 2 else 1e-5
        torch.testing.assert_close(got, expected.float(), atol=atol, rtol=1e-4)


def bad_na2d_calls(head_dim=8, device='cpu'):
    """[(na2d's arguments, keyword arguments, the whole ValueError message)], one per kind of
    bad input to ``na2d`` on (1, 2, 9, 9, head_dim) maps: what every backend refuses the
    same way (the seam checks before any backend runs), naming the problem and the fix."""
    q = torch.randn(1, 2, 9, 9, head_dim, device=device)
    shape = f'1, 2, 9, 9, {head_dim}'
    return [
        ((q[0], q[0], q[0], 3), {},
         f'na2d: query must have 5 dims (B, heads, H, W, head_dim), got shape (2, 9, 9, '
         f'{head_dim}): split the channels into heads first, or use '
         'nat_mm.NeighborhoodAttention2D, which takes (B, H, W, C) maps'),
        ((q, q[:, :, :8], q, 3), {},
         f'na2d: query, key and value shapes disagree: ({shape}), (1, 2, 8, 9, {head_dim}), '
         f'({shape}): give all three the same (B, heads, H, W, head_dim)'),
        ((q, q.double(), q, 3), {},
         'na2d: query, key and value dtypes disagree: torch.float32, torch.float64, '
         'torch.float32: cast them to one (e.g. key.to(query.dtype))'),
        ((q, q, q, 4), {}, 'na2d: kernel_size must be an odd int >= 3, got 4'),
        ((q, q, q, 3), dict(dilation=0), 'na2d: dilation must be an int >= 1, got 0'),
        ((q, q, q, 3), dict(dropout_p=1.0), 'na2d: dropout_p must be in [0, 1), got 1.0'),
        ((q, q, q, 3), dict(rpb=torch.zeros(2, 3, 3, device=device)),
         'na2d: rpb must have shape (heads, 2K-1, 2K-1) = (2, 5, 5), got (2, 3, 3)'),
        ((q, q, q, 5), dict(dilation=2),
         'na2d: the feature map (9x9) is smaller than kernel_size * dilation = 5*2 = 10. Use '
         'nat_mm.NeighborhoodAttention2D, which zero-pads small inputs as the official NAT '
         'models did.'),
    ]
