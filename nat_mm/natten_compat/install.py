"""``install()``: ``import natten`` served by :mod:`nat_mm.natten_compat` (no NATTEN installed).

How clients look for NATTEN, and what answers them:

- ``import natten``, ``from natten.functional import ...``,
  ``importlib.util.find_spec('natten')``: :class:`NattenFinder`, a meta path
  finder placed *after* Python's own finders, so an installed NATTEN is always
  found first (``force=True`` places it first). It makes the package
  ``natten`` and its module ``natten.functional`` from :mod:`.v0_17` or
  :mod:`.v0_20` (their ``na2d`` signatures clash: one API per install).
- ``importlib.metadata.version('natten')``: the same finder's
  ``find_distributions`` (importlib.metadata's finder protocol) answers with a
  distribution whose only file is its METADATA (name ``natten``, version
  ``<API release>+natmm``, e.g. ``0.17.4+natmm``); nothing is written to disk.
- Transformers 4.x decides ``is_natten_available()`` once, when it is imported
  (``transformers.utils.import_utils._natten_available``), and ``import
  nat_mm`` imports it whenever it is installed (MMEngine's optimizer registry
  does): :func:`install` sets that flag, and gives NAT / DiNAT modules imported
  before it NATTEN's functions in place of the stand-ins that raise.
  Transformers 5 asks ``importlib.util.find_spec`` each time.

:func:`uninstall` undoes all of it.
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import pathlib
import re
import sys
import warnings

from . import v0_17, v0_20

#: ``install(api=...)`` -> the module holding that API.
APIS = {'0.17': v0_17, '0.20': v0_20}
#: Local version label of the reported version (PEP 440: ``0.17.4+natmm`` >= ``0.17.4``).
LOCAL_LABEL = 'natmm'
#: Transformers modules that bind ``natten2dqkrpb`` / ``natten2dav`` when imported.
TRANSFORMERS_NATTEN_USERS = ('transformers.models.nat.modeling_nat',
                             'transformers.models.deprecated.nat.modeling_nat',
                             'transformers.models.dinat.modeling_dinat')
_MODULES = ('natten', 'natten.functional')


def reported_version(api):
    """The version ``natten.__version__`` and ``importlib.metadata`` give for ``api``."""
    return f'{APIS[api].NATTEN_VERSION}+{LOCAL_LABEL}'


class _ServedDistribution(importlib.metadata.Distribution):
    """The metadata of the served ``natten``: its METADATA file, nothing else."""

    def __init__(self, version):
        self._metadata = (
            'Metadata-Version: 2.1\nName: natten\n'
            f'Version: {version}\n'
            'Summary: NATTEN\'s API served by nat_mm.natten_compat (no NATTEN installed)\n')

    def read_text(self, filename):
        return self._metadata if filename == 'METADATA' else None

    def locate_file(self, path):
        return pathlib.Path(__file__).parent / path


class _Loader(importlib.abc.Loader):
    """Fills ``natten`` / ``natten.functional`` with one API's names."""

    def __init__(self, api):
        self.api = api

    def create_module(self, spec):
        return None     # a plain module

    def exec_module(self, module):
        source = APIS[self.api]
        top = module.__name__ == 'natten'
        for name in source.TOP_LEVEL if top else source.FUNCTIONAL:
            setattr(module, name, getattr(source, name))
        module.__getattr__ = _missing_name(module.__name__, self.api)
        if top:
            module.__version__ = reported_version(self.api)
            module.functional = importlib.import_module('natten.functional')


def _missing_name(module_name, api):
    def missing(name):
        raise AttributeError(
            f'module {module_name!r} has no attribute {name!r}: nat_mm.natten_compat serves '
            f'NATTEN {APIS[api].NATTEN_VERSION}\'s 2-D neighbourhood attention only (what it '
            'covers: docs/natten_compat.md)')
    return missing


class NattenFinder(importlib.abc.MetaPathFinder):
    """Finds the modules ``natten`` and ``natten.functional`` and the
    distribution ``natten``, served by nat_mm with the API ``api``."""

    def __init__(self, api):
        self.api = api

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _MODULES:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, _Loader(self.api), origin='nat_mm.natten_compat',
            is_package=fullname == 'natten')

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        name = context.name
        if name is not None and re.sub(r'[-_.]+', '-', name).lower() == 'natten':
            return iter([_ServedDistribution(reported_version(self.api))])
        return iter(())


#: What install() changed, for uninstall(): the finder, the natten modules it
#: removed (force=True), and (object, attribute, old value) of what it set.
_state = {'finder': None, 'removed_modules': {}, 'patched': []}


def _installed_natten():
    """The spec ``import natten`` would use now (None: no natten at all)."""
    try:
        return importlib.util.find_spec('natten')
    except ValueError:      # a module in sys.modules without __spec__: something is there
        return sys.modules['natten'].__spec__


def _set(obj, name, value):
    _state['patched'].append((obj, name, getattr(obj, name)))
    setattr(obj, name, value)


def _forget_cached_answer(import_utils):
    """Transformers versions that memoise ``is_natten_available()`` ask again."""
    cache_clear = getattr(getattr(import_utils, 'is_natten_available', None), 'cache_clear', None)
    if cache_clear is not None:
        cache_clear()


def _tell_transformers(api):
    """Transformers imported before install(): its cached availability flag, and the
    stand-ins its NAT / DiNAT modules bound when NATTEN was missing."""
    import_utils = sys.modules.get('transformers.utils.import_utils')
    if import_utils is None:
        return
    if getattr(import_utils, '_natten_available', True) is False:
        _set(import_utils, '_natten_available', True)
    _forget_cached_answer(import_utils)
    if api != '0.17':
        return      # NATTEN 0.20 has no natten2dqkrpb either: those modules fail as with it
    for module_name in TRANSFORMERS_NATTEN_USERS:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name in ('natten2dqkrpb', 'natten2dav'):
            bound = getattr(module, name, None)
            if bound is not None and bound.__module__.startswith('transformers.'):
                _set(module, name, getattr(v0_17, name))


def install(api='0.17', force=False):
    """Make ``import natten`` give NATTEN's API computed by nat_mm.

    Args:
        api: ``'0.17'``: NATTEN 0.14 to 0.17.4's functions and module
            (:mod:`.v0_17`; what Hugging Face Transformers' NAT / DiNAT and the
            official NAT code call); ``'0.20'``: NATTEN 0.20+'s (:mod:`.v0_20`).
        force: serve ``natten`` from nat_mm even where a NATTEN is installed
            (its modules already imported are set aside until :func:`uninstall`).

    Returns:
        True when ``import natten`` now gives nat_mm's layer; False when an
        installed NATTEN was left in place (with a warning naming it).
    """
    if api not in APIS:
        raise ValueError(f'install: api must be one of {sorted(APIS)} (the NATTEN API '
                         f'generation the code was written for), got {api!r}')
    finder = _state['finder']
    if finder is not None:
        if finder.api == api and (not force or sys.meta_path[0] is finder):
            return True
        uninstall()
    if not force:
        spec = _installed_natten()
        if spec is not None:
            warnings.warn(
                f'nat_mm.natten_compat.install: a NATTEN is installed ({spec.origin}); it was '
                'left in place. install(force=True) serves natten from nat_mm instead.')
            return False
    finder = NattenFinder(api)
    if force:
        _state['removed_modules'] = {name: sys.modules.pop(name) for name in list(sys.modules)
                                     if name == 'natten' or name.startswith('natten.')}
        sys.meta_path.insert(0, finder)
    else:
        sys.meta_path.append(finder)
    _state['finder'] = finder
    _tell_transformers(api)
    return True


def uninstall():
    """Undo :func:`install`: ``import natten`` finds what is installed again; the
    Transformers flags and functions it set are restored. Nothing to undo: no-op."""
    finder = _state['finder']
    if finder is None:
        return
    sys.meta_path.remove(finder)
    for name in _MODULES:
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module.__spec__, 'loader', None), _Loader):
            del sys.modules[name]
    sys.modules.update(_state['removed_modules'])
    for obj, name, old in reversed(_state['patched']):
        setattr(obj, name, old)
    _forget_cached_answer(sys.modules.get('transformers.utils.import_utils'))
    _state.update(finder=None, removed_modules={}, patched=[])
