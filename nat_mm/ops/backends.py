"""The registry of neighbourhood-attention backends, and the error they raise.

Every backend lives in its own module of :mod:`nat_mm.ops` and exposes

* ``na2d_<name>(query, key, value, kernel_size, dilation, rpb, scale, dropout_p)``,
  called by :func:`nat_mm.ops.na2d` with validated arguments (``scale``
  resolved; dropout applied exactly as passed), and
* ``is_available(device_type) -> bool``, which never raises,

and optionally

* ``unavailable_reason(device_type) -> str or None``: why not (shown in errors,
  and warned once when a default backend of a device is skipped);
* ``SUPPORTS_DROPOUT = False``: the backend refuses ``dropout_p > 0``, so a
  default choice passes it over for such calls.

This module only names them (:data:`BACKENDS`, :data:`DEFAULT_ORDER`,
:data:`SELF_CHECKED`) and imports a backend's module when it is first used
(:func:`backend_module`), so the backends import :class:`BackendError` from
here without an import cycle.
"""
import importlib
import types

#: name -> module (a module name relative to :mod:`nat_mm.ops`, imported when first
#: used, or a module-like object) holding ``na2d_<name>`` and ``is_available``.
BACKENDS = {
    'csr': '.csr',
    'triton': '.triton_na',
    'flex': '.flex',
    'export': '.export',
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


def backend_module(name):
    """The module (or module-like object) of backend ``name``, imported on first use."""
    entry = BACKENDS[name]
    return importlib.import_module(entry, __package__) if isinstance(entry, str) else entry


class BackendError(RuntimeError):
    """A backend cannot run these inputs on this machine (not a user error)."""


def register_backend(name, function, is_available=lambda device_type: True):
    """Add backend ``name`` computing ``function(query, key, value, kernel_size,
    dilation, rpb, scale, dropout_p)`` (used by the tools, e.g. FLOP counting
    and the attention-free floor of the benchmark); choose it with
    :func:`nat_mm.ops.na_backend`. It is never a default."""
    BACKENDS[name] = types.SimpleNamespace(
        **{f'na2d_{name}': function, 'is_available': is_available})
