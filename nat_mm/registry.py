"""Registration glue: the one place that puts nat_mm's models into the
MMDetection and MMSegmentation registries.

The operator and backbone modules never import mmdet/mmseg; they only need
torch and mmengine. This module registers them into the downstream registries
when those packages are installed.
"""
import importlib
import importlib.util
import warnings

#: Downstream packages whose ``<package>.registry.MODELS`` receives nat_mm's models.
DOWNSTREAM_PACKAGES = ('mmdet', 'mmseg')


def downstream_model_registries():
    """``{package: MODELS}`` for each downstream package that is installed.

    A package that is installed but fails to import (e.g. mmcv without its
    compiled ops) is skipped with a warning that says why.
    """
    registries = {}
    for package in DOWNSTREAM_PACKAGES:
        if importlib.util.find_spec(package) is None:
            continue
        try:
            registries[package] = importlib.import_module(f'{package}.registry').MODELS
        except Exception as exc:  # noqa: BLE001 - report any import failure
            warnings.warn(f'nat_mm: {package} is installed but {package}.registry failed to '
                          f'import ({exc!r}); nat_mm models are not registered there.')
    return registries


def register_model(cls, name=None):
    """Register ``cls`` into every installed downstream ``MODELS`` registry.

    Args:
        cls: the model class.
        name: registry key, default ``cls.__name__``.

    Returns:
        The list of package names it was registered into.
    """
    registered = []
    for package, registry in downstream_model_registries().items():
        registry.register_module(name=name or cls.__name__, module=cls, force=True)
        registered.append(package)
    return registered
