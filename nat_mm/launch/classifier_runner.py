"""The Runner of the MMPretrain configs (``configs/mmpretrain/``): ``load_from`` loads whole
NAT classifiers from official files and Hub folders.

MMEngine's ``Runner.load_checkpoint`` (``load_from``, ``tools/test.py CHECKPOINT``,
``--resume``) reads ``.pth`` files only and loads by key names, non-strictly: an official
classifier (keys without ``backbone.``) would load nothing, with warnings only.
:class:`ClassifierRunner` loads the checkpoint of a model with a NAT backbone and a linear
head through :func:`nat_mm.models.checkpoint.classifier.load_classifier` instead (official
``.pth``, Hub folder or ``model.safetensors``, MMEngine checkpoint of the classifier; a
checkpoint without head, or with a head of another number of classes, stops with what to
do); any other model loads as in MMEngine.

Selected by ``runner_type='ClassifierRunner'`` in a config; importing this module registers
it in MMEngine's root ``RUNNERS`` (the configs import it with ``custom_imports``; it imports
``mmengine.runner``, and so OpenCV, which ``import nat_mm`` does not).
"""
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..models.checkpoint.classifier import is_nat_classifier, load_classifier


@RUNNERS.register_module()
class ClassifierRunner(Runner):
    """MMEngine's Runner; NAT classifiers load their checkpoints with nat_mm's loader."""

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):  # noqa: B006 (MMEngine's signature)
        """Load ``filename`` into the model.

        Returns:
            the checkpoint as MMEngine's ``resume`` reads it: the file's dict (``meta``,
            ``optimizer``, ... of an MMEngine checkpoint) with ``state_dict`` in the
            model's names.
        """
        model = self.model.module if is_model_wrapper(self.model) else self.model
        if not is_nat_classifier(model):
            return super().load_checkpoint(filename, map_location, strict, revise_keys)
        state_dict, file = load_classifier(model, filename, map_location=map_location)
        # hooks (EMAHook, RNGStateHook) see the weights in the model's names, whatever the file
        checkpoint = dict(file.checkpoint) if 'meta' in file.checkpoint else {}
        checkpoint['state_dict'] = state_dict
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
