"""The registry of neighbourhood-attention backends.

A backend is a :class:`Backend` record: its name, its attention function
``(query, key, value, kernel_size, dilation, rpb, scale, dropout_p) -> out``
(called by :func:`nat_mm.ops.na2d` with validated arguments, ``scale`` resolved,
dropout applied exactly as passed), whether it can run on a device type (and
why not), and whether it drops attention weights. :data:`BACKENDS` holds the
registered ones by name; the built-in backends are registered as loaders
(:func:`_load_csr`, ...) that import their module on first use: ``import nat_mm``
imports neither Triton nor FlexAttention.

Availability is asked once per (backend, device type) in a process
(:func:`is_available_on`; :func:`clear_availability_cache` forgets the answers).
:data:`DEFAULT_ORDER` and :data:`SELF_CHECKED` say which backends a device
tries and which are checked on first use (:mod:`.self_check`).
"""
import functools
from typing import Callable, NamedTuple, Optional


def _always_available(device_type):
    return True


def _no_reason(device_type):
    return None


class Backend(NamedTuple):
    """One neighbourhood-attention backend (a named tuple: immutable, hashable, and
    traced through by ``torch.compile``).

    Args:
        name: what ``na2d(..., backend=name)`` and :func:`nat_mm.ops.na_backend` take.
        function: ``(query, key, value, kernel_size, dilation, rpb, scale, dropout_p)``
            -> out; query, key, value and out (B, heads, H, W, head_dim), rpb
            (heads, 2K-1, 2K-1) or None.
        is_available: ``(device_type) -> bool``; never raises.
        unavailable_reason: ``(device_type) -> str or None``: why not (shown in
            errors, and warned once when a default backend of a device is skipped).
        supports_dropout: False: the backend refuses ``dropout_p > 0``, so a default
            choice passes it over for such calls.
    """
    name: str
    function: Callable
    is_available: Callable[[str], bool] = _always_available
    unavailable_reason: Callable[[str], Optional[str]] = _no_reason
    supports_dropout: bool = True

    def can_run(self, query, dropout_p):
        """Whether the backend runs on ``query``'s device type with ``dropout_p``; cheap
        (availability is cached)."""
        return ((dropout_p == 0 or self.supports_dropout)
                and is_available_on(self, query.device.type))


def _load_csr():
    from . import csr
    return Backend('csr', csr.na2d_csr, csr.is_available)


def _load_triton():
    from . import triton_na
    return Backend('triton', triton_na.na2d_triton, triton_na.is_available,
                   triton_na.unavailable_reason)


def _load_flex():
    from . import flex
    return Backend('flex', flex.na2d_flex, flex.is_available, flex.unavailable_reason,
                   supports_dropout=flex.SUPPORTS_DROPOUT)


def _load_export():
    from . import export
    return Backend('export', export.na2d_export, export.is_available)


#: name -> its :class:`Backend`, or a loader (no arguments) that imports the backend's
#: module and returns the record (replaced by the record on first use).
BACKENDS = {
    'csr': _load_csr,
    'triton': _load_triton,
    'flex': _load_flex,
    'export': _load_export,
}

#: Backends tried, in order, when none is chosen; by device type ('*': any other).
DEFAULT_ORDER = {
    'cpu': ('csr',),
    'cuda': ('triton', 'flex', 'csr'),
    '*': ('csr',),
}

#: Backends checked on first use per (device, dtype) against another backend on the same
#: device (:mod:`.self_check`): name -> the backend it is compared with.
SELF_CHECKED = {'triton': 'csr'}


def get_backend(name):
    """The :class:`Backend` registered as ``name`` (KeyError if none), its module
    imported on first use."""
    entry = BACKENDS[name]
    if not isinstance(entry, Backend):
        entry = BACKENDS[name] = entry()
    return entry


@functools.lru_cache(maxsize=None)
def is_available_on(backend, device_type):
    """``backend.is_available(device_type)``, asked once per (record, device type)."""
    return bool(backend.is_available(device_type))


def clear_availability_cache():
    """Forget the answers of :func:`is_available_on` (for code that changes what a backend
    finds, e.g. tests)."""
    is_available_on.cache_clear()


def register_backend(backend, function=None, is_available=_always_available):
    """Add a backend, chosen with :func:`nat_mm.ops.na_backend` or ``na2d(...,
    backend=name)``; it is never a default.

    Args:
        backend: a :class:`Backend`, or its name with ``function`` (and ``is_available``)
            as the record's fields.

    Returns:
        The registered :class:`Backend`.
    """
    if not isinstance(backend, Backend):
        backend = Backend(backend, function, is_available)
    BACKENDS[backend.name] = backend
    return backend
