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
