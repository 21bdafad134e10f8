"""The one place that registers nat_mm's models.

They go into MMEngine's root ``MODELS`` registry. Every OpenMMLab 2.x library
(mmdet, mmseg, mmpose, mmrotate, mmpretrain, ...) creates its ``MODELS`` as a
child of that root, and a child registry that does not know a type looks it up
in its parent, so ``type='NAT'`` builds from any of them without nat_mm
importing (or even knowing) the library.
"""
from mmengine.registry import MODELS

from .models import NAT

#: Registry key -> class, for every model nat_mm provides.
NAT_MODELS = {'NAT': NAT}


def register_models(registry=MODELS):
    """Register :data:`NAT_MODELS` into ``registry`` (default: MMEngine's root ``MODELS``).

    Runs on ``import nat_mm``; registering again replaces the entries (no error).
    """
    for name, cls in NAT_MODELS.items():
        registry.register_module(name=name, module=cls, force=True)
