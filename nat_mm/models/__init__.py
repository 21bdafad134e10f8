from .backbones import NAT
from .presets import ARCH_SETTINGS, DILATION_PRESETS, PUBLISHED_CHECKPOINTS, resolve_dilations
from .weight_conversion import checkpoint_filter_fn, load_pretrained

__all__ = ['NAT', 'ARCH_SETTINGS', 'DILATION_PRESETS', 'PUBLISHED_CHECKPOINTS',
           'checkpoint_filter_fn', 'load_pretrained', 'resolve_dilations']
