"""The ``backend_na2d`` fixture: :func:`nat_mm.na2d` through each backend that runs on CPU;
``fresh_availability`` for tests that change what a backend finds."""
import functools

import pytest

from nat_mm.ops import available_backends, backends, na2d

#: Backends whose own test module covers them (triton: slow under CPU emulation; flex:
#: forward only on the CPU).
OWN_TESTS_ONLY = {'triton', 'flex'}
CPU_BACKENDS = [name for name in available_backends('cpu') if name not in OWN_TESTS_ONLY]


@pytest.fixture(params=CPU_BACKENDS)
def backend_na2d(request):
    """``na2d`` with ``backend=`` fixed to one CPU backend."""
    return functools.partial(na2d, backend=request.param)


@pytest.fixture
def fresh_availability():
    """The seam asks every backend again whether it runs, during the test (after its
    changes) and after it (once they are undone)."""
    backends.clear_availability_cache()
    yield
    backends.clear_availability_cache()
