"""Let torch's safe ``torch.load`` read MMEngine training checkpoints.

torch >= 2.6 loads with ``weights_only=True`` by default, and MMEngine 0.10.7
calls ``torch.load`` without saying otherwise. A training checkpoint written
by the MMEngine ``Runner`` holds more than tensors and builtins: the message
hub pickles ``HistoryBuffer`` objects (numpy arrays inside, and the statistic
functions they carry), and runtime information such as a best score can be a
numpy scalar. Resuming then fails with "Unsupported global".

Rather than turning the safety check off, :func:`allow_mmengine_checkpoints`
adds exactly those globals to torch's weights-only allow-list. Each is a type
constructor or a rebuild function that cannot run arbitrary code; anything
else in a checkpoint is still refused.
"""
import importlib
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

#: Statistic functions ``HistoryBuffer`` registers for itself; its pickled
#: state carries them by reference.
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')

# numpy 2 moved ``numpy.core`` to ``numpy._core``; checkpoints written under
# either version name their own path, so both names are mapped to the
# installed function.
_NUMPY_CORE_MODULES = ('numpy.core.multiarray', 'numpy._core.multiarray')


def history_buffer_statistic(owner, name):
    """Weights-only stand-in for ``builtins.getattr``.

    torch.save pickles with protocol 2, which stores a function defined in a
    class (``HistoryBuffer.mean``) as ``getattr(HistoryBuffer, 'mean')``.
    Allowing the real ``getattr`` would hand a crafted checkpoint any
    attribute of any allowed object, so this resolves only the
    ``HistoryBuffer`` statistic functions.

    Raises:
        pickle.UnpicklingError: for any other ``(owner, name)``.
    """
    if owner is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'weights-only load refused getattr({owner!r}, {name!r}): only '
        f'HistoryBuffer statistics {HISTORY_BUFFER_STATISTICS} may be looked up')


def _numpy_multiarray():
    try:
        return importlib.import_module('numpy._core.multiarray')
    except ImportError:  # numpy < 1.26 has only numpy.core
        return importlib.import_module('numpy.core.multiarray')


def _numeric_dtype_classes():
    """numpy's classes of bool and number dtypes (``numpy.dtypes.Float64DType``
    ...): a pickled dtype is rebuilt as ``numpy.dtype(...)``, but its state is
    then set on an instance of one of these classes (numpy >= 1.25), which
    the weights-only unpickler allows only for allow-listed types."""
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:  # numpy < 1.25: every dtype is a plain numpy.dtype
        return []
    classes = dict.fromkeys(getattr(dtypes, name) for name in dtypes.__all__)  # minus aliases
    return [cls for cls in classes if np.dtype(cls.type).kind in 'biufc']


def mmengine_checkpoint_globals():
    """The globals an MMEngine training checkpoint needs beyond torch's defaults.

    Returns:
        list of ``(object, 'module.qualname')`` pairs in the form
        ``torch.serialization.add_safe_globals`` takes.
    """
    multiarray = _numpy_multiarray()
    numpy_core = [(getattr(multiarray, func), f'{module}.{func}')
                  for module in _NUMPY_CORE_MODULES
                  for func in ('_reconstruct', 'scalar')]
    classes = [HistoryBuffer, np.ndarray, np.dtype, *_numeric_dtype_classes()]
    return [
        *numpy_core,
        *((cls, f'{cls.__module__}.{cls.__qualname__}') for cls in classes),
        (history_buffer_statistic, 'builtins.getattr'),
    ]


def allow_mmengine_checkpoints():
    """Add :func:`mmengine_checkpoint_globals` to torch's weights-only allow-list.

    Idempotent (the allow-list is a set). A no-op on torch < 2.4, which has no
    allow-list and does not load weights-only by default.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals(mmengine_checkpoint_globals())
