"""nat_mm: Neighborhood Attention Transformer backbones for OpenMMLab 2.x.

``import nat_mm`` needs only torch and mmengine: it registers ``NAT`` into
MMEngine's root ``MODELS`` registry (see :mod:`nat_mm.registry`), where mmdet,
mmseg and the other OpenMMLab 2.x libraries find it.
"""
from .compat import check_torch_version

check_torch_version()  # one line naming both versions, before anything fails deeper

from .models import NAT
from .ops import NeighborhoodAttention2D, na2d, na2d_reference
from .registry import register_models
from .utils import allow_mmengine_checkpoints

__version__ = '0.1.0'

__all__ = ['na2d', 'na2d_reference', 'NeighborhoodAttention2D', 'NAT']

register_models()
allow_mmengine_checkpoints()  # torch >= 2.6 loads weights-only; MMEngine resumes need this
