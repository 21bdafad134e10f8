"""The ``backend_na2d`` fixture: :func:`nat_mm.na2d` through each backend that runs on CPU."""
import functools

import pytest

from nat_mm.ops import available_backends, na2d

#: Backends whose own test module covers them (triton: slow under CPU emulation; flex:
#: forward only on the CPU).
OWN_TESTS_ONLY = {'triton', 'flex'}
CPU_BACKENDS = [name for name in available_backends('cpu') if name not in OWN_TESTS_ONLY]


@pytest.fixture(params=CPU_BACKENDS)
def backend_na2d(request):
    """``na2d`` with ``backend=`` fixed to one CPU backend."""
    return functools.partial(na2d, backend=request.param)
