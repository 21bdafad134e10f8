"""gelu_linear against the plain autograd composition."""
import pytest
import torch
import torch.nn.functional as F

from nat_mm.ops.gelu_linear import gelu_linear


def _plain(hidden, weight, bias):
    return F.linear(F.gelu(hidden), weight, bias)


@pytest.mark.parametrize('with_bias', [True, False])
def test_output_and_gradients_match_autograd(with_bias):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 7, 12, generator=gen, requires_grad=True)
    weight = torch.randn(4, 12, generator=gen, requires_grad=True)
    bias = torch.randn(4, generator=gen, requires_grad=True) if with_bias else None
    inputs = [t for t in (hidden, weight, bias) if t is not None]
    grad = torch.randn(2, 5, 7, 4, generator=gen)
    got = gelu_linear(hidden, weight, bias)
    expected = _plain(hidden, weight, bias)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for g, e in zip(torch.autograd.grad(got, inputs, grad),
                    torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    args = (torch.randn(3, 6, generator=gen, dtype=torch.float64, requires_grad=True),
            torch.randn(2, 6, generator=gen, dtype=torch.float64, requires_grad=True),
            torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(gelu_linear, args)


def test_keeps_only_the_hidden_activation_for_backward():
    hidden = torch.randn(8, 16, requires_grad=True)
    weight = torch.randn(4, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        gelu_linear(hidden, weight)
    # the plain composition also keeps gelu(hidden), a second (8, 16) tensor
    assert sorted(tuple(t.shape) for t in saved) == [(4, 16), (8, 16)]


def test_under_cpu_autocast_matches_plain_mixed_precision():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 12, generator=gen, requires_grad=True)
    weight = torch.randn(4, 12, generator=gen, requires_grad=True)
    bias = torch.randn(4, generator=gen, requires_grad=True)
    grads = []
    for fn in (gelu_linear, _plain):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = fn(hidden, weight, bias)
        assert out.dtype == torch.bfloat16
        grads.append(torch.autograd.grad(out.float().sum(), [hidden, weight, bias]))
    for got, expected in zip(*grads):
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
