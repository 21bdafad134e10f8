from .backbones import NAT
from .checkpoint import checkpoint_filter_fn, load_pretrained

__all__ = ['NAT', 'checkpoint_filter_fn', 'load_pretrained']
