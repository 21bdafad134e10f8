"""The gather reference against the definition, worked by hand."""
import itertools

import pytest
import torch

from nat_mm.ops.reference import na2d_reference, window_1d
from na_testing import make_qkv, make_rpb


@pytest.mark.parametrize('query,length,kernel,dilation,keys,bias', [
    (0, 6, 3, 1, [0, 1, 2], [2, 3, 4]),       # left border: window moved right
    (2, 6, 3, 1, [1, 2, 3], [1, 2, 3]),       # interior: centred
    (5, 6, 3, 1, [3, 4, 5], [0, 1, 2]),       # right border: moved left
    (1, 9, 3, 2, [1, 3, 5], [2, 3, 4]),       # group 1 is 1, 3, 5, 7
    (8, 9, 3, 2, [4, 6, 8], [0, 1, 2]),       # group 0 is 0, 2, 4, 6, 8
    (4, 9, 3, 2, [2, 4, 6], [1, 2, 3]),
    (3, 7, 7, 1, [0, 1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8, 9]),   # window = map
])
def test_window_1d_by_hand(query, length, kernel, dilation, keys, bias):
    assert window_1d(query, length, kernel, dilation) == (keys, bias)


def test_borders_use_shifted_windows():
    """A corner query sees the K x K block in the corner, not a zero-padded window."""
    q = torch.zeros(1, 1, 6, 6, 4)
    k = torch.zeros(1, 1, 6, 6, 4)
    v = torch.arange(36.).view(1, 1, 6, 6, 1).expand(1, 1, 6, 6, 4).contiguous()
    out = na2d_reference(q, k, v, 3)      # uniform weights: output = mean of the window
    assert out[0, 0, 0, 0, 0].item() == pytest.approx(v[0, 0, :3, :3, 0].mean().item())
    assert out[0, 0, 5, 2, 0].item() == pytest.approx(v[0, 0, 3:6, 1:4, 0].mean().item())
    assert out[0, 0, 2, 2, 0].item() == pytest.approx(v[0, 0, 1:4, 1:4, 0].mean().item())


@pytest.mark.parametrize('kernel', [3, 5, 7])
def test_window_covering_the_map_is_full_attention_with_relative_bias(kernel):
    """d = 1 and K = H = W: every query sees the whole map."""
    _, q, k, v = make_qkv(2, 3, kernel, kernel, 8)
    rpb = make_rpb(3, kernel)
    pos = torch.arange(kernel)
    ys, xs = torch.meshgrid(pos, pos, indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = (kernel - 1) + ys[None, :] - ys[:, None]        # key - query
    dx = (kernel - 1) + xs[None, :] - xs[:, None]
    logits = (q.flatten(2, 3) * 8 ** -0.5) @ k.flatten(2, 3).transpose(-1, -2) + rpb[:, dy, dx]
    expected = (logits.softmax(-1) @ v.flatten(2, 3)).view_as(q)
    torch.testing.assert_close(na2d_reference(q, k, v, kernel, rpb=rpb), expected,
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('kernel,dilation', [(3, 2), (3, 3), (5, 2)])
def test_dilation_is_na_on_each_subgrid(kernel, dilation):
    side = kernel * dilation
    _, q, k, v = make_qkv(1, 2, side, side + dilation, 8)
    rpb = make_rpb(2, kernel)
    out = na2d_reference(q, k, v, kernel, dilation, rpb)
    for gy, gx in itertools.product(range(dilation), repeat=2):
        sub = [t[:, :, gy::dilation, gx::dilation] for t in (q, k, v)]
        torch.testing.assert_close(out[:, :, gy::dilation, gx::dilation],
                                   na2d_reference(*sub, kernel, 1, rpb), atol=1e-6, rtol=1e-5)
