"""The registry of neighbourhood-attention backends, and the error they raise.

Every backend lives in its own module of :mod:`nat_mm.ops` and exposes

* ``na2d_<name>(query, key, value, kernel_size, dilation, rpb, scale, dropout_p)``,
  called by :func:`nat_mm.ops.na2d` with validated arguments (``scale``
  resolved; dropout applied exactly as passed), and
* ``is_available(device_type) -> bool``, which never raises, and optionally
  ``unavailable_reason(device_type) -> str | None``, which says why not (shown
  in errors, and warned once when a default backend of a device is skipped).

This module only names them (:data:`BACKENDS`, :data:`DEFAULT_ORDER`): it
imports no backend, so the backends import :class:`BackendError` from here and
:mod:`nat_mm.ops.functional`, which imports a backend's module when it is first
used, imports the registry, without an import cycle.
"""
import types

#: name -> module (a module name relative to :mod:`nat_mm.ops`, imported when first
#: used, or a module-like object) holding ``na2d_<name>`` and ``is_available``.
BACKENDS = {
    'csr': '.csr',
    'triton': '.triton_na',
    'export': '.export',
}

#: Backends tried, in order, when none is chosen; by device type ('*': any other).
DEFAULT_ORDER = {
    'cpu': ('csr',),
    'cuda': ('triton', 'csr'),
    '*': ('csr',),
}


class BackendError(RuntimeError):
    """A backend cannot run these inputs on this machine (not a user error)."""


def register_backend(name, function, is_available=lambda device_type: True):
    """Add backend ``name`` computing ``function(query, key, value, kernel_size,
    dilation, rpb, scale, dropout_p)`` (used by the tools, e.g. FLOP counting
    and the attention-free floor of the benchmark); choose it with
    :func:`nat_mm.ops.na_backend`. It is never a default."""
    BACKENDS[name] = types.SimpleNamespace(
        **{f'na2d_{name}': function, 'is_available': is_available})
