"""The torch and Triton features nat_mm uses that are newer than its minimum torch.

nat_mm runs on every torch from :data:`MINIMUM_TORCH` on. Each feature newer
than that is looked up here once, by its presence (never by a version
string), and every module calls it through this file; what a missing feature
costs is said where it is used:

* ``torch.compiler.is_exporting`` tells :func:`nat_mm.na2d` that
  ``torch.export`` is tracing it, and ``torch.export`` must trace in Python by
  default (non-strict): exporting (:mod:`nat_mm.deploy`) needs both
  (:func:`require_export_support`).
* ``torch.amp.custom_fwd(device_type=...)`` runs the Triton backend's backward
  in its forward's autocast state on any device; older torch has it for CUDA
  only (``torch.cuda.amp``).
* ``torch.nn.attention.flex_attention`` with block masks sized per map
  (``BlockMask.from_kv_blocks(seq_lengths=...)``) runs the ``flex`` backend;
  without it that backend is unavailable (:func:`flex_attention_unusable_reason`).
* float16 autocast on the CPU (torch 2.1 autocasts the CPU to bfloat16 only):
  :func:`autocast_supports`.
* the Triton release the fused kernels are written for
  (:data:`MINIMUM_TRITON`); torch 2.1-2.9 bring an older one, and CUDA then
  uses the next backend (:func:`triton_unusable_reason`).
"""
import inspect
import re
import warnings

import torch

#: The oldest torch the suite passes on (``make test-torch TORCH=...``, docs/environments.md).
MINIMUM_TORCH = (2, 1)
#: The oldest Triton the fused kernels are tested with (the torch matrix, docs/environments.md).
MINIMUM_TRITON = (3, 6)


def _release(version):
    """(major, minor) of a version string such as '2.1.2+cu121' or '3.0.0rc1'."""
    match = re.match(r'(\d+)\.(\d+)', version)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def check_torch_version(version=None):
    """Raises ImportError naming the installed and the minimum torch when the
    installed one (or ``version``) is older than :data:`MINIMUM_TORCH`."""
    version = version or torch.__version__
    if _release(version) < MINIMUM_TORCH:
        minimum = '.'.join(map(str, MINIMUM_TORCH))
        raise ImportError(
            f'nat_mm needs torch >= {minimum}, but torch {version} is installed: '
            f'upgrade torch (pip install "torch>={minimum}")')


_is_exporting = getattr(getattr(torch, 'compiler', None), 'is_exporting', None)


def export_unsupported_reason():
    """Why this torch cannot export nat_mm models (torch.export, ONNX), or None when it can.

    Exporting needs ``torch.compiler.is_exporting`` (so that :func:`nat_mm.na2d` picks its
    traceable backend) and a ``torch.export`` that traces in Python by default
    (``strict=False``): TorchDynamo's strict tracing cannot follow nat_mm's backend choice."""
    if _is_exporting is None:
        return (f'torch {torch.__version__} cannot tell nat_mm that it is being exported '
                '(no torch.compiler.is_exporting)')
    from torch import export
    strict = inspect.signature(export.export).parameters.get('strict')
    if strict is None or strict.default is not False:   # no such argument: always TorchDynamo
        return (f"torch {torch.__version__}'s torch.export traces with TorchDynamo by default "
                "(strict=True), which cannot follow nat_mm's choice of backend")
    return None


def is_exporting():
    """True while ``torch.export`` traces the caller (False where torch cannot say)."""
    return _is_exporting is not None and _is_exporting()


def require_export_support(what='export'):
    """Raises RuntimeError naming what is missing when this torch cannot export nat_mm."""
    reason = export_unsupported_reason()
    if reason is not None:
        raise RuntimeError(
            f'{what}: {reason}. Export in an environment with a newer torch (2.13 is tested; '
            'the exported file runs anywhere ONNX Runtime does)')


def custom_fwd_bwd(forward, backward, device_type):
    """(forward, backward) of an autograd Function, wrapped so that the backward
    runs in the forward's autocast state on ``device_type``."""
    amp = getattr(torch, 'amp', None)
    if hasattr(amp, 'custom_fwd'):
        return (amp.custom_fwd(forward, device_type=device_type),
                amp.custom_bwd(backward, device_type=device_type))
    if device_type == 'cuda':
        return torch.cuda.amp.custom_fwd(forward), torch.cuda.amp.custom_bwd(backward)
    return forward, backward   # older torch has no CPU autocast hooks for Functions


def triton_version():
    """The importable Triton's version string, or None."""
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def triton_unusable_reason(version=None):
    """Why the fused Triton kernels cannot run with the importable Triton (or
    Triton ``version``), or None when they can."""
    version = version or triton_version()
    if version is None:
        return 'Triton is not installed'
    if _release(version) < MINIMUM_TRITON:
        minimum = '.'.join(map(str, MINIMUM_TRITON))
        return (f'Triton {version} is older than {minimum}, the oldest Triton '
                'the fused kernels are tested with (docs/gpu.md: which torch brings which Triton)')
    return None


def flex_attention_unusable_reason():
    """Why this torch's FlexAttention cannot run the ``flex`` backend, or None when it can."""
    try:
        from torch.nn.attention.flex_attention import BlockMask
    except ImportError:
        return (f'torch {torch.__version__} has no FlexAttention '
                '(torch.nn.attention.flex_attention)')
    if 'seq_lengths' not in inspect.signature(BlockMask.from_kv_blocks).parameters:
        return (f"torch {torch.__version__}'s FlexAttention cannot size a block mask for "
                'maps that are not a multiple of its block (BlockMask.from_kv_blocks has no '
                'seq_lengths)')
    return None


def autocast_supports(device_type, dtype):
    """Whether ``torch.autocast(device_type, dtype=dtype)`` computes a matmul in ``dtype``
    (torch 2.1 disables CPU autocast for float16, with a warning)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with torch.autocast(device_type, dtype=dtype):
                ones = torch.ones(1, 1, device=device_type)
                return (ones @ ones).dtype == dtype
    except RuntimeError:
        return False
