"""nat_mm/ops/flops.py: the multiply-adds of neighbourhood attention against an independent
count, and the counting node that runs na2d unchanged."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nat_mm import NAT
from nat_mm.ops import backends, flops, functional, na2d_reference
from na_testing import make_qkv

#: A small NAT (as tests/test_tools/test_get_flops.py's).
SMALL_ARCH = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), mlp_ratio=3.)


@pytest.mark.parametrize('batch, heads, height, width, head_dim, kernel, dilation', [
    (1, 1, 7, 7, 4, 7, 1), (2, 3, 9, 11, 8, 3, 2), (1, 2, 15, 13, 16, 5, 3)])
def test_formula_matches_the_reference_matmuls(batch, heads, height, width, head_dim, kernel,
                                               dilation):
    """The gather reference's two einsums (QK^T over each query's K*K gathered keys, then
    the weighted sum of its K*K values) as torch's FLOP counter counts them (2 flops per
    multiply-add)."""
    _, q, k, v = make_qkv(batch, heads, height, width, head_dim)
    with FlopCounterMode(display=False) as counter:
        na2d_reference(q, k, v, kernel, dilation)
    assert counter.get_total_flops() == 2 * flops.neighborhood_attention_flops(
        batch, heads, height, width, head_dim, kernel)


def test_counting_path_computes_the_same_features():
    """Routing na2d through the counting node changes no output, registers no backend,
    and the module's op is restored afterwards."""
    import nat_mm.ops.module as na_module
    torch.manual_seed(0)
    model = NAT(arch=SMALL_ARCH).eval()
    inputs = torch.randn(1, 3, 96, 96)
    registered = dict(backends.BACKENDS)
    with torch.no_grad():
        reference = model(inputs)
        with flops.na2d_as_one_node():
            routed = model(inputs)
    assert na_module.na2d is functional.na2d
    assert backends.BACKENDS == registered
    for expected, actual in zip(reference, routed):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
