from .backends import register_backend
from .common import BackendError
from .functional import available_backends, na2d, na_backend
from .module import NeighborhoodAttention2D
from .reference import na2d_reference

__all__ = ['na2d', 'na2d_reference', 'NeighborhoodAttention2D', 'available_backends',
           'na_backend', 'BackendError', 'register_backend']
