"""Generated cases (Hypothesis) for the NAT backbone: any input size gives the
four strided outputs, finite, with finite gradients; a NaN or inf in one input
pixel reaches exactly the stage-1 outputs whose receptive field holds it.

The networks are narrow (one block per stage) so that each example is cheap;
the number of examples comes from the profile in tests/conftest.py.
"""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nat_mm import NAT
from nat_mm.ops import na_backend
from nat_mm.ops.reference import window_1d

NARROW = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), mlp_ratio=1.)
#: Examples of a test relative to the profile's ``max_examples``.
SHARE = 0.2


def _share(fraction):
    return settings(max_examples=max(1, round(settings.default.max_examples * fraction)))


@_share(SHARE)
@given(height=st.integers(1, 300), width=st.integers(1, 300),
       kernel=st.sampled_from([3, 5, 7]),
       dilations=st.lists(st.integers(1, 3), min_size=4, max_size=4),
       seed=st.integers(0, 2 ** 31 - 1))
def test_any_input_size_gives_strided_finite_outputs(height, width, kernel, dilations, seed):
    torch.manual_seed(seed)
    model = NAT(arch=NARROW, kernel_size=kernel, dilations=[[d] for d in dilations])
    x = torch.randn(1, 3, height, width)
    outs = model(x)
    assert [tuple(out.shape) for out in outs] == [
        (1, 16 * 2 ** i, math.ceil(height / 4 / 2 ** i), math.ceil(width / 4 / 2 ** i))
        for i in range(4)]
    assert all(torch.isfinite(out).all() for out in outs)
    sum(out.square().mean() for out in outs).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def _conv_reach(mask):
    """Outputs of a 3x3, stride-2, padding-1 convolution that read a True input:
    output (i, j) reads inputs 2i-1..2i+1, 2j-1..2j+1."""
    height, width = mask.shape
    return torch.tensor([[bool(mask[max(0, 2 * i - 1):2 * i + 2, max(0, 2 * j - 1):2 * j + 2].any())
                          for j in range(math.ceil(width / 2))]
                         for i in range(math.ceil(height / 2))])


def _attention_reach(mask, kernel, dilation):
    """Queries whose neighbourhood (by the definition) holds a True token."""
    height, width = mask.shape
    rows = [window_1d(y, height, kernel, dilation)[0] for y in range(height)]
    cols = [window_1d(x, width, kernel, dilation)[0] for x in range(width)]
    return torch.tensor([[bool(mask[rows[y]][:, cols[x]].any()) for x in range(width)]
                         for y in range(height)])


@_share(SHARE)
@given(data=st.data(), kernel=st.sampled_from([3, 5]),
       dilations=st.lists(st.integers(1, 2), min_size=2, max_size=2),
       bad=st.sampled_from([float('nan'), float('inf'), -float('inf')]),
       seed=st.integers(0, 2 ** 31 - 1))
def test_a_bad_pixel_reaches_only_its_receptive_field_at_stage_1(data, kernel, dilations, bad,
                                                                  seed):
    """Through the stem (two stride-2 convolutions) and two NA blocks: the
    stage-1 tokens whose output is non-finite are exactly those that depend on
    the pixel, and every other token equals the clean image's.

    With the CPU's default backend, csr. The export and triton backends spread a
    non-finite *value* to their whole tile (tests/test_ops/test_non_finite.py)."""
    window = kernel * max(dilations)
    height = data.draw(st.integers(4 * window, 4 * window + 24), label='height')
    width = data.draw(st.integers(4 * window, 4 * window + 24), label='width')
    y0 = data.draw(st.integers(0, height - 1), label='y0')
    x0 = data.draw(st.integers(0, width - 1), label='x0')
    torch.manual_seed(seed)
    model = NAT(arch=dict(NARROW, depths=(2, 1, 1, 1)), kernel_size=kernel,
                dilations=[dilations, [1], [1], [1]], out_indices=(0,)).eval()
    clean = torch.randn(1, 3, height, width)
    image = clean.clone()
    image[0, data.draw(st.integers(0, 2), label='channel'), y0, x0] = bad
    with torch.no_grad(), na_backend('csr'):
        expected, = model(clean)
        got, = model(image)

    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y0, x0] = True
    reach = _conv_reach(_conv_reach(mask))
    for dilation in dilations:
        reach = _attention_reach(reach, kernel, dilation)
    spoiled = ~torch.isfinite(got[0]).all(0)
    assert torch.equal(spoiled, reach)
    assert torch.isfinite(got[0][:, reach]).sum() == 0   # every channel of a reached token
    torch.testing.assert_close(got[0][:, ~reach], expected[0][:, ~reach])
