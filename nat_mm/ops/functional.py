"""Neighbourhood attention, functional form: argument checks and the backend seam.

:func:`na2d` picks a backend of :mod:`.backends` per call: while a model is
exported (``torch.export``, ``torch.onnx.export``) always ``'export'``
(:mod:`.export`, dense ops only); otherwise the ``backend`` argument, else the
innermost :func:`na_backend` context, else the first available entry of
:data:`~.backends.DEFAULT_ORDER` for the inputs' device. A backend that cannot
run on this machine after all (e.g. a kernel that does not compile for this
GPU) raises :class:`~.backends.BackendError`; a backend chosen by default is
then replaced by the next one, with one warning. The Triton kernels are also
checked against the CSR backend the first time they run for a (device, dtype)
(:mod:`.self_check`); a default choice that fails its check is replaced by the
next backend for that (device, dtype), with one warning. A default choice also
passes over backends without dropout for calls with ``dropout_p > 0``.
"""
import contextlib
import contextvars
import warnings

import torch

from ..compat import is_exporting
from . import self_check
from .backends import BACKENDS, DEFAULT_ORDER, Backend, get_backend, is_available_on
from .common import BackendError

_chosen_backend = contextvars.ContextVar('nat_mm_na_backend', default=None)
_failed = set()     # (backend, device type): raised BackendError once, skipped since
_warned_unavailable = set()   # (backend, device type): warned once that it cannot run


def _device_type(device):
    if device is None:
        return None
    return torch.device(device).type


def available_backends(device=None):
    """Names of the registered backends that can run here.

    Args:
        device: a device (or type: 'cpu', 'cuda', ...): the backends that can
            run on it; None: those that can run on the CPU or, when present,
            the GPU.

    Returns:
        A tuple of names, for ``na2d(..., backend=name)`` or :func:`na_backend`.
    """
    types = _device_types(_device_type(device))
    return tuple(name for name in BACKENDS
                 if any(is_available_on(get_backend(name), t) for t in types))


def _device_types(device_type):
    """[device_type], or for None the CPU and, when present, CUDA."""
    return [device_type] if device_type else ['cpu'] + (
        ['cuda'] if torch.cuda.is_available() else [])


def _unavailable_reason(backend, device_type):
    """What ``backend`` lacks on ``device_type`` (None: any device here), if it says."""
    reasons = (backend.unavailable_reason(t) for t in _device_types(device_type))
    return '; '.join(dict.fromkeys(r for r in reasons if r)) or None


def _resolve(backend, device_type=None):
    """The :class:`~.backends.Backend` of ``backend`` (a record, used as given, or a
    registered name) that can run on ``device_type`` (None: here), else ValueError
    naming the available ones."""
    record = backend if isinstance(backend, Backend) else (
        get_backend(backend) if backend in BACKENDS else None)
    if record is not None and any(is_available_on(record, t)
                                  for t in _device_types(device_type)):
        return record
    name = record.name if record is not None else backend
    where = f' on {device_type}' if device_type else ''
    state = f'not available{where or " here"}' if record is not None else 'unknown'
    reason = _unavailable_reason(record, device_type) if record is not None else None
    available = available_backends(device_type)
    order = DEFAULT_ORDER.get(device_type, DEFAULT_ORDER['*'])
    use = next((n for n in order if n in available), None)
    raise ValueError(
        f'na2d: backend {name!r} is {state}' + (f' ({reason})' if reason else '')
        + f'; available{where}: {list(available)} (all backends: {list(BACKENDS)})'
        + (f'; use backend={use!r}' if record is not None and use else ''))


@contextlib.contextmanager
def na_backend(backend):
    """Use ``backend`` for every :func:`na2d` call inside the block.

    This includes the calls made by :class:`~nat_mm.NeighborhoodAttention2D`
    and the :class:`~nat_mm.NAT` backbone; ``None`` restores the automatic
    choice. An explicit ``na2d(..., backend=...)`` still wins.

    Args:
        backend: a registered name (:func:`available_backends`), a
            :class:`~.backends.Backend` record (used without registering it), or None.
    """
    if backend is not None:
        _resolve(backend)
    token = _chosen_backend.set(backend)
    try:
        yield
    finally:
        _chosen_backend.reset(token)


def check_na2d_args(query, key, value, kernel_size, dilation, rpb):
    """Raises TypeError or ValueError (saying what to do) unless the arguments are what
    :func:`na2d` takes: query, key, value (B, heads, H, W, head_dim) tensors of one dtype
    and device, odd ``kernel_size`` >= 3, ``dilation`` >= 1 with H, W >= kernel_size *
    dilation, rpb (heads, 2K-1, 2K-1) on their device or None."""
    if not all(isinstance(t, torch.Tensor) for t in (query, key, value)):
        raise TypeError('na2d: query, key and value must be torch.Tensors, got '
                        f'{", ".join(type(t).__name__ for t in (query, key, value))}: convert '
                        'them with torch.as_tensor')
    if query.dim() != 5:
        raise ValueError(
            f'na2d: query must have 5 dims (B, heads, H, W, head_dim), got shape '
            f'{tuple(query.shape)}: split the channels into heads first, or use '
            'nat_mm.NeighborhoodAttention2D, which takes (B, H, W, C) maps')
    if key.shape != query.shape or value.shape != query.shape:
        raise ValueError(
            f'na2d: query, key and value shapes disagree: {tuple(query.shape)}, '
            f'{tuple(key.shape)}, {tuple(value.shape)}: give all three the same '
            '(B, heads, H, W, head_dim)')
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise ValueError(
            f'na2d: query, key and value dtypes disagree: {query.dtype}, {key.dtype}, '
            f'{value.dtype}: cast them to one (e.g. key.to(query.dtype))')
    if key.device != query.device or value.device != query.device:
        raise ValueError(
            f'na2d: query, key and value devices disagree: {query.device}, {key.device}, '
            f'{value.device}: move them to one device (.to(query.device))')
    if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f'na2d: kernel_size must be an odd int >= 3, got {kernel_size!r}')
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f'na2d: dilation must be an int >= 1, got {dilation!r}')
    height, width = query.shape[2:4]
    window = kernel_size * dilation
    if height < window or width < window:
        raise ValueError(
            f'na2d: the feature map ({height}x{width}) is smaller than kernel_size * dilation '
            f'= {kernel_size}*{dilation} = {window}. Use nat_mm.NeighborhoodAttention2D, which '
            'zero-pads small inputs as the official NAT models did.')
    if rpb is not None:
        expected = (query.shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1)
        if not isinstance(rpb, torch.Tensor) or tuple(rpb.shape) != expected:
            got = tuple(rpb.shape) if isinstance(rpb, torch.Tensor) else type(rpb).__name__
            raise ValueError(
                f'na2d: rpb must have shape (heads, 2K-1, 2K-1) = {expected}, got {got}')
        if rpb.device != query.device:
            raise ValueError(f'na2d: rpb is on {rpb.device}, query on {query.device}: move '
                             'it there (rpb.to(query.device))')


def exporting():
    """Whether a model is being exported (torch.export, which the dynamo ONNX
    exporter uses, or the TorchScript-based ONNX exporter)."""
    return is_exporting() or torch.onnx.is_in_onnx_export()


def _candidates(backend, query, dropout_p):
    """(:class:`~.backends.Backend` records to try in order, whether the choice was
    explicit)."""
    device_type = query.device.type
    if exporting():
        # Only the dense backend can be traced (CSR's sparse tensors and
        # torch.compiler.disable cannot); it wins over na_backend contexts.
        if backend not in (None, 'export'):
            name = backend.name if isinstance(backend, Backend) else backend
            raise ValueError(
                f"na2d: backend {name!r} cannot be exported; while exporting na2d uses "
                "'export' (pass backend=None or 'export')")
        return (get_backend('export'),), True
    backend = backend or _chosen_backend.get()
    if backend is not None:
        return (_resolve(backend, device_type),), True
    order = DEFAULT_ORDER.get(device_type, DEFAULT_ORDER['*'])
    records = [get_backend(name) for name in order]
    usable = [b for b in records if (b.name, device_type) not in _failed
              and b.can_run(query, dropout_p)
              and not self_check.failed(b.name, query.device, query.dtype)]
    if not usable:
        raise ValueError(f'na2d: no backend can run on {device_type}; tried {list(order)}')
    _warn_skipped_defaults(records[:records.index(usable[0])], device_type, usable[0].name)
    return usable, False


def _warn_skipped_defaults(skipped, device_type, used):
    """One warning per (backend, device type) for a default backend that cannot run here."""
    for backend in skipped:
        reason = _unavailable_reason(backend, device_type)
        if reason and (backend.name, device_type) not in _warned_unavailable:
            _warned_unavailable.add((backend.name, device_type))
            warnings.warn(f'nat_mm: the {backend.name!r} neighbourhood-attention backend is '
                          f'off on {device_type} ({reason}); using {used!r} instead')


def na2d(query, key, value, kernel_size, dilation=1, rpb=None, scale=None, dropout_p=0.0,
         backend=None):
    """2-D neighbourhood attention with NATTEN's exact semantics.

    Args:
        query, key, value: (B, heads, H, W, head_dim), same dtype and device.
        kernel_size: odd K >= 3; every query attends to K x K keys.
        dilation: d >= 1; H and W must be >= K * d.
        rpb: relative position bias (heads, 2K-1, 2K-1) or None.
        scale: logit scale, default head_dim ** -0.5.
        dropout_p: dropout probability on the attention weights, applied
            whenever it is > 0 (:class:`~nat_mm.NeighborhoodAttention2D`
            passes 0 in eval mode).
        backend: one of :func:`available_backends` for the inputs' device (or a
            :class:`~.backends.Backend` record), or None for the :func:`na_backend`
            context or the device's default.
            While exporting, ``'export'`` (the only backend that can be traced).

    Returns:
        (B, heads, H, W, head_dim), in the inputs' dtype.

    Every backend is tested against the gather implementation
    :func:`nat_mm.ops.na2d_reference` and against NATTEN's own numbers.
    """
    check_na2d_args(query, key, value, kernel_size, dilation, rpb)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f'na2d: dropout_p must be in [0, 1), got {dropout_p!r}')
    if scale is None:
        scale = query.shape[-1] ** -0.5
    device_type = query.device.type
    candidates, explicit = _candidates(backend, query, dropout_p)
    names = [b.name for b in candidates]
    for i, (name, chosen) in enumerate(zip(names, candidates)):
        try:
            self_check.verify(name, query.device, query.dtype)
            return chosen.function(query, key, value, kernel_size, dilation, rpb, scale,
                                   dropout_p)
        except self_check.SelfCheckFailed as exc:
            if explicit or i == len(names) - 1:
                raise self_check.SelfCheckFailed(
                    f"{exc}; use backend={self_check.SELF_CHECKED[name]!r} (or "
                    f"{self_check.ENV}=0 to run it anyway)") from None
            warnings.warn(f'nat_mm: {exc}; using {names[i + 1]!r} on {query.device} for '
                          f'{query.dtype} in this process ({self_check.ENV}=0 skips the check)')
        except BackendError as exc:
            if explicit or i == len(names) - 1:
                raise
            _failed.add((name, device_type))
            warnings.warn(f'nat_mm: the {name!r} neighbourhood-attention backend cannot run on '
                          f'this {device_type} device ({exc}); using {names[i + 1]!r} instead')
