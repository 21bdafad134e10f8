"""Without CUDA, Triton kernels run through Triton's interpreter: the flag must
be set before the kernels are defined (nat_mm.ops.triton_na decorates them at
import), so it is set here, before any test module imports nat_mm.

Hypothesis profiles of the property tests (``tests/*/test_properties.py``),
chosen with ``HYPOTHESIS_PROFILE`` (default ``ci``):

- ``ci``: derandomized (the same examples on every run), a fixed number of
  examples; a failure prints the reproducing example and its
  ``@reproduce_failure`` blob.
- ``soak``: random examples, many more; for a long local run
  (``HYPOTHESIS_PROFILE=soak pytest tests -k properties``).
"""
import os

import torch
from hypothesis import HealthCheck, Phase, settings

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

# No 'explain' phase: it reruns a failing example hundreds of times (minutes here).
_COMMON = dict(deadline=None, print_blob=True,
               phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile('ci', max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile('soak', max_examples=2200, **_COMMON)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))
