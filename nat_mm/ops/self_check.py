"""First-use self-check of a backend that no test has run on the hardware it runs on.

The first time a backend of :data:`~.backends.SELF_CHECKED` (the Triton kernels) is about
to run for a (device, dtype) pair in a process, :func:`verify` runs a small fixed probe
(:data:`PROBE_CASES`: kernel sizes 7 and 11, dilation 1 and 2, rpb, head_dim 32) through
it and through its reference backend (``csr``) on the same device, forward and backward,
and compares the output and the q, k, v and rpb gradients: the largest relative error
``max|got - expected| / max|expected|`` must stay within the dtype's tolerance
(:data:`TOLERANCE`) and everything must be finite. The result is kept for the process;
a failure (a mismatch, or any error while probing) raises :class:`SelfCheckFailed` with
the numbers (worst error, case, device, dtype, torch and Triton versions) now and on
every later call for that pair, so :func:`nat_mm.na2d` uses the next backend instead.

``NAT_MM_SELF_CHECK=0`` turns the check off (read on every first use).
"""
import os
from importlib import metadata

import torch

from .backends import SELF_CHECKED, get_backend
from .common import BackendError

#: Environment variable: ``0`` turns the check off, ``1`` (or unset) leaves it on.
ENV = 'NAT_MM_SELF_CHECK'

#: name -> (batch, heads, H, W, head_dim, kernel_size, dilation); every case with rpb. On
#: a GPU both span several query tiles per dilation group.
PROBE_CASES = {
    'K7 dilation 1 (B1 h2 17x19 d32)': (1, 2, 17, 19, 32, 7, 1),
    'K11 dilation 2 (B1 h2 22x25 d32)': (1, 2, 22, 25, 32, 11, 2),
}

#: Largest relative error allowed per input dtype (float64 runs in float32 in the kernels).
TOLERANCE = {
    torch.float64: 1e-4,
    torch.float32: 1e-4,
    torch.bfloat16: 4e-2,
    torch.float16: 1e-2,
}

#: (backend, device, dtype) -> None (passed) or the failure message.
_results = {}


class SelfCheckFailed(BackendError):
    """A backend failed its first-use self-check on a (device, dtype)."""


def enabled():
    """Whether checks run (``NAT_MM_SELF_CHECK`` unset or 1)."""
    value = os.environ.get(ENV, '1')
    if value not in ('0', '1'):
        raise ValueError(f'{ENV}={value!r}: set it to 0 (no first-use self-check of the '
                         'Triton kernels) or 1 (the default)')
    return value == '1'


def failed(name, device, dtype):
    """Whether backend ``name`` has failed its check on (device, dtype) in this process."""
    return _results.get((name, torch.device(device), dtype)) is not None


def rel_max_error(got, expected):
    """max|got - expected| / max|expected|, in float64."""
    got, expected = got.double(), expected.double()
    return ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def _probe_inputs(case, device, dtype):
    """q, k, v (B, heads, H, W, head_dim) and rpb (heads, 2K-1, 2K-1) requiring grad, and
    an output gradient; the same numbers on every call."""
    batch, heads, height, width, head_dim, kernel_size, _ = case
    gen = torch.Generator().manual_seed(0)
    q, k, v, grad_out = (torch.randn(batch, heads, height, width, head_dim, generator=gen)
                         for _ in range(4))
    rpb = torch.randn(heads, 2 * kernel_size - 1, 2 * kernel_size - 1, generator=gen)
    inputs = [t.to(device, dtype).requires_grad_() for t in (q, k, v, rpb)]
    return inputs, grad_out.to(device, dtype)


def _outputs_and_grads(name, case, device, dtype):
    """(out, dq, dk, dv, drpb) of backend ``name`` on the probe ``case``."""
    _, _, _, _, head_dim, kernel_size, dilation = case
    inputs, grad_out = _probe_inputs(case, device, dtype)
    function = get_backend(name).function
    out = function(*inputs[:3], kernel_size, dilation, inputs[3], head_dim ** -0.5, 0.0)
    return (out, *torch.autograd.grad(out, inputs, grad_out))


def _versions():
    try:
        triton = metadata.version('triton')
    except metadata.PackageNotFoundError:
        triton = 'not installed'
    return f'torch {torch.__version__}, Triton {triton}'


def probe(name, device, dtype):
    """Runs the probe of backend ``name`` against its reference on ``device``.

    Returns:
        None when every case is within the tolerance, else one line saying where and
        by how much it failed (or what it raised).
    """
    reference = SELF_CHECKED[name]
    where = f'{device} ({str(dtype).replace("torch.", "")}; {_versions()})'
    tolerance = TOLERANCE.get(dtype, TOLERANCE[torch.float32])
    names = ('output', 'q gradient', 'k gradient', 'v gradient', 'rpb gradient')
    for case_name, case in PROBE_CASES.items():
        try:
            got = _outputs_and_grads(name, case, device, dtype)
            expected = _outputs_and_grads(reference, case, device, dtype)
        except Exception as error:  # noqa: BLE001 - any error means: do not use the backend
            problem = f'raised {type(error).__name__}: {error}'
        else:
            errors = {part: rel_max_error(g, e) for part, g, e in zip(names, got, expected)}
            worst = max(errors, key=errors.get)
            if all(bool(torch.isfinite(t).all()) for t in got):
                if errors[worst] <= tolerance:
                    continue
                problem = f'worst relative error {errors[worst]:.1e} in the {worst}'
            else:
                problem = 'non-finite values'
            problem += f' (tolerance {tolerance:.0e}) against {reference!r}'
        return (f'the {name!r} backend failed its first-use self-check on {where}: '
                f'{problem}, case {case_name!r}')
    return None


def verify(name, device, dtype):
    """Raises :class:`SelfCheckFailed` if backend ``name`` fails (or has failed) its
    check on (device, dtype); checks on first use. A no-op for backends without a check
    and with ``NAT_MM_SELF_CHECK=0``."""
    if name not in SELF_CHECKED or not enabled():
        return
    key = (name, torch.device(device), dtype)
    if key not in _results:
        _results[key] = _run_probe(*key)
    if _results[key] is not None:
        raise SelfCheckFailed(_results[key])


@torch.compiler.disable   # runs eagerly, once, outside any compiled graph
def _run_probe(name, device, dtype):
    """:func:`probe` with gradients on and autocast off, whatever the caller's modes."""
    with torch.inference_mode(False), torch.enable_grad(), \
            torch.autocast(device.type, enabled=False):
        return probe(name, device, dtype)
