"""A non-finite query, key or value token spoils exactly the outputs that read it.

A bad query spoils its own output only; a bad key or value spoils the queries
whose window (by the definition) holds it. The export and triton backends
multiply a whole tile's halo of values by the attention weights, which are
exactly 0 outside each query's window, and 0 * NaN is NaN: a bad value spreads
to every query of its tile. Those cases are marked as expected failures
(strict: they fail loudly once the backends mask them).
"""
import pytest
import torch

from nat_mm.ops import available_backends, na2d
from nat_mm.ops.reference import window_1d

HEIGHT, WIDTH, KERNEL, DILATION, TOKEN = 9, 11, 3, 1, (4, 5)
LEAKS_VALUES = {'export', 'triton'}
#: What FlexAttention's CPU kernel does (docs/operator.md): no NaN/inf out of a non-finite
#: query or key, and a non-finite value reaches its whole 128-token block.
FLEX_NON_FINITE = ("flex: a non-finite query or key gives finite outputs, a non-finite value "
                   "reaches its block")


def _cases():
    for backend in available_backends('cpu'):
        for which in 'qkv':
            marks = [pytest.mark.xfail(
                strict=True, reason=f'{backend}: a non-finite value reaches its whole tile '
                '(0 * NaN)')] if which == 'v' and backend in LEAKS_VALUES else []
            if backend == 'flex':
                marks = [pytest.mark.xfail(strict=True, reason=FLEX_NON_FINITE)]
            yield pytest.param(backend, which, marks=marks, id=f'{backend}-{which}')


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
@pytest.mark.parametrize('backend,which', list(_cases()))
def test_a_bad_token_spoils_only_the_outputs_that_read_it(backend, which, bad):
    gen = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(1, 2, HEIGHT, WIDTH, 16, generator=gen) for name in 'qkv'}
    tensors[which][:, :, TOKEN[0], TOKEN[1]] = bad
    rpb = torch.randn(2, 2 * KERNEL - 1, 2 * KERNEL - 1, generator=gen)
    out = na2d(tensors['q'], tensors['k'], tensors['v'], KERNEL, DILATION, rpb, backend=backend)
    if which == 'q':
        reads = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
        reads[TOKEN] = True
    else:
        rows = torch.tensor([TOKEN[0] in window_1d(y, HEIGHT, KERNEL, DILATION)[0]
                             for y in range(HEIGHT)])
        cols = torch.tensor([TOKEN[1] in window_1d(x, WIDTH, KERNEL, DILATION)[0]
                             for x in range(WIDTH)])
        reads = rows[:, None] & cols[None, :]
    spoiled = ~torch.isfinite(out).all(-1)          # (B, heads, H, W)
    assert torch.equal(spoiled, reads.expand_as(spoiled))
