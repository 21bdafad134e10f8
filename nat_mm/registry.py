"""The one place that registers nat_mm's models and weight initializers.

They go into MMEngine's root registries. Every OpenMMLab 2.x library
(mmdet, mmseg, mmpose, mmrotate, mmpretrain, ...) creates its ``MODELS`` and
``WEIGHT_INITIALIZERS`` as children of those roots, and a child registry that does
not know a type looks it up in its parent, so ``type='NAT'`` builds from any of them
without nat_mm importing (or even knowing) the library.

``Pretrained`` is registered over MMEngine's own initializer of that name: a model-level
``init_cfg=dict(type='Pretrained', checkpoint=...)`` of an MMPretrain classifier with a NAT
backbone then loads the whole official classifier (head included; see
:mod:`nat_mm.models.checkpoint.classifier`), and every other module is initialised by
MMEngine's ``PretrainedInit`` exactly as before.
"""
from mmengine.registry import MODELS, WEIGHT_INITIALIZERS

from .models import NAT
from .models.checkpoint.classifier import ClassifierPretrainedInit

#: Registry key -> class, for every model nat_mm provides.
NAT_MODELS = {'NAT': NAT}
#: Registry key -> class, for the weight initializers nat_mm provides.
NAT_INITIALIZERS = {'Pretrained': ClassifierPretrainedInit}


def register_models(registry=MODELS, initializers=WEIGHT_INITIALIZERS):
    """Register :data:`NAT_MODELS` into ``registry`` and :data:`NAT_INITIALIZERS` into
    ``initializers`` (default: MMEngine's root ``MODELS`` and ``WEIGHT_INITIALIZERS``).

    Runs on ``import nat_mm``; registering again replaces the entries (no error).
    """
    for name, cls in NAT_MODELS.items():
        registry.register_module(name=name, module=cls, force=True)
    for name, cls in NAT_INITIALIZERS.items():
        initializers.register_module(name=name, module=cls, force=True)
