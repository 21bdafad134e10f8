"""The split operators beyond NATTEN's golden cases: half precision, non-contiguous inputs, and
gradients of only some inputs, against the gather reference's numbers."""
import pytest
import torch

from nat_mm.natten_compat.compute import neighbourhood_logits, neighbourhood_sum
from nat_mm.ops import na2d_reference

KERNEL, DILATION = 5, 2


def _projected(dtype, seed=0):
    """q, k, v cut from one (B, H, W, 3, heads, D) projection, as models make them
    (non-contiguous views), and an rpb."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(2, 11, 13, 3, 2, 8, generator=gen).to(dtype).requires_grad_(True)
    rpb = torch.randn(2, 2 * KERNEL - 1, 2 * KERNEL - 1, generator=gen).to(dtype)
    return qkv, rpb.requires_grad_(True)


def _split(q, k, v, rpb):
    attn = neighbourhood_logits(q * q.shape[-1] ** -0.5, k, KERNEL, DILATION, rpb)
    return neighbourhood_sum(attn.softmax(-1), v, KERNEL, DILATION)


def _outputs_and_grads(qkv, rpb, grad_out):
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    out = _split(q, k, v, rpb)
    assert out.dtype == qkv.dtype
    return (out, *torch.autograd.grad(out, (qkv, rpb), grad_out.to(qkv.dtype)))


@pytest.mark.parametrize('dtype, tolerance', [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_split_operators_match_reference_on_model_views(dtype, tolerance):
    qkv, rpb = _projected(dtype)
    grad_out = torch.randn(2, 2, 11, 13, 8, generator=torch.Generator().manual_seed(1))
    got = _outputs_and_grads(qkv, rpb, grad_out)
    qkv64, rpb64 = (t.detach().double().requires_grad_(True) for t in (qkv, rpb))
    q, k, v = qkv64.permute(3, 0, 4, 1, 2, 5).unbind(0)
    expected = na2d_reference(q, k, v, KERNEL, DILATION, rpb64)
    expected = (expected, *torch.autograd.grad(expected, (qkv64, rpb64), grad_out.double()))
    for name, a, b in zip(('out', 'dqkv', 'drpb'), got, expected):
        torch.testing.assert_close(a.double(), b, rtol=tolerance, atol=tolerance, msg=name)


def test_gradients_of_some_inputs_only():
    """Inputs that do not require grad get none; the others get what they get when all do."""
    qkv, rpb = _projected(torch.float64)
    inputs = [t.detach() for t in qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)] + [rpb.detach()]
    grad_out = torch.randn(2, 2, 11, 13, 8, dtype=torch.float64)

    def grads(which):
        leaves = [t.clone().requires_grad_(i in which) for i, t in enumerate(inputs)]
        out = _split(*leaves)
        return torch.autograd.grad(out, [leaves[i] for i in which], grad_out)

    full = grads((0, 1, 2, 3))
    for which in ((1, 3), (2,), (0,)):
        for i, got in zip(which, grads(which)):
            torch.testing.assert_close(got, full[i], rtol=1e-12, atol=1e-12)
