"""nat_mm: Neighborhood Attention Transformer backbones for OpenMMLab 2.x."""
from .models import NAT
from .ops import NeighborhoodAttention2D, na2d, na2d_reference
from .registry import register_model
from .utils import allow_mmengine_checkpoints

__version__ = '0.1.0'

__all__ = ['na2d', 'na2d_reference', 'NeighborhoodAttention2D', 'NAT']

register_model(NAT)
allow_mmengine_checkpoints()  # torch >= 2.6 loads weights-only; MMEngine resumes need this
