from .backbones import NAT
from .checkpoint import (CheckpointError, CheckpointNotFoundError, checkpoint_filter_fn,
                         load_pretrained)
from .presets import ARCH_SETTINGS, DILATION_PRESETS, PUBLISHED_CHECKPOINTS, resolve_dilations

__all__ = ['NAT', 'ARCH_SETTINGS', 'DILATION_PRESETS', 'PUBLISHED_CHECKPOINTS', 'CheckpointError',
           'CheckpointNotFoundError', 'checkpoint_filter_fn', 'load_pretrained',
           'resolve_dilations']
