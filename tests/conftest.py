"""Without CUDA, Triton kernels run through Triton's interpreter: the flag must
be set before the kernels are defined (nat_mm.ops.triton_na decorates them at
import), so it is set here, before any test module imports nat_mm."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
