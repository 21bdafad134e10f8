from .functional import na2d
from .module import NeighborhoodAttention2D
from .reference import na2d_reference

__all__ = ['na2d', 'na2d_reference', 'NeighborhoodAttention2D']
