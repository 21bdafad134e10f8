"""install(): ``import natten`` and the ways clients detect NATTEN, without shadowing an
installed NATTEN unless asked; uninstall() undoes it."""
import importlib
import importlib.metadata
import importlib.util
import sys

import pytest

from nat_mm import natten_compat
from nat_mm.natten_compat import v0_17, v0_20
from nat_mm.natten_compat.install import NattenFinder


def _forget_natten():
    for name in [name for name in sys.modules if name.split('.')[0] == 'natten']:
        del sys.modules[name]


@pytest.fixture
def served():
    """Function: install(api, force) for this test only."""
    yield natten_compat.install
    natten_compat.uninstall()
    _forget_natten()


def test_import_nat_mm_installs_nothing():
    assert not any(isinstance(finder, NattenFinder) for finder in sys.meta_path)


def test_api_0_17_serves_natten_and_its_metadata(served):
    assert served() is True
    spec = importlib.util.find_spec('natten')
    assert spec is not None and spec.submodule_search_locations == []
    assert importlib.metadata.version('natten') == '0.17.4+natmm'
    assert importlib.metadata.metadata('NATTEN')['Name'] == 'natten'
    import natten
    from natten.functional import na2d, na2d_qk, natten2dav, natten2dqkrpb
    assert natten.__version__ == '0.17.4+natmm' and natten.__spec__.name == 'natten'
    assert (natten2dqkrpb, natten2dav, na2d_qk, na2d) == (
        v0_17.natten2dqkrpb, v0_17.natten2dav, v0_17.na2d_qk, v0_17.na2d)
    assert natten.NeighborhoodAttention2D is v0_17.NeighborhoodAttention2D
    assert natten.functional is sys.modules['natten.functional']
    with pytest.raises(AttributeError, match=r"'natten' has no attribute 'use_fused_na'.*"
                                             r"NATTEN 0\.17\.4.*docs/natten_compat\.md"):
        natten.use_fused_na


def test_api_0_20_serves_its_own_na2d(served):
    assert served(api='0.20') is True
    assert importlib.metadata.version('natten') == '0.20.1+natmm'
    import natten
    from natten.functional import na2d
    assert natten.na2d is na2d is v0_20.na2d
    assert natten.NeighborhoodAttention2D is v0_20.NeighborhoodAttention2D
    with pytest.raises(ImportError, match='natten2dqkrpb'):
        from natten.functional import natten2dqkrpb  # noqa: F401 (NATTEN 0.20 has none)


def test_switching_api_replaces_the_served_modules(served):
    served(api='0.20')
    import natten
    assert natten.na2d is v0_20.na2d
    served(api='0.17')
    natten = importlib.import_module('natten')
    assert natten.functional.na2d is v0_17.na2d
    assert importlib.metadata.version('natten') == '0.17.4+natmm'


def test_uninstall_leaves_no_natten():
    natten_compat.install()
    importlib.import_module('natten.functional')
    natten_compat.uninstall()
    assert 'natten' not in sys.modules and 'natten.functional' not in sys.modules
    assert importlib.util.find_spec('natten') is None
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version('natten')


def test_unknown_api_is_refused():
    with pytest.raises(ValueError, match=r"api must be one of \['0.17', '0.20'\].*'0.19'"):
        natten_compat.install(api='0.19')


@pytest.fixture
def installed_natten(tmp_path, monkeypatch):
    """A NATTEN installed on sys.path (a package and its dist-info), as pip leaves one."""
    (tmp_path / 'natten').mkdir()
    (tmp_path / 'natten' / '__init__.py').write_text("__version__ = '0.17.5'\nREAL = True\n")
    (tmp_path / 'natten-0.17.5.dist-info').mkdir()
    (tmp_path / 'natten-0.17.5.dist-info' / 'METADATA').write_text(
        'Metadata-Version: 2.1\nName: natten\nVersion: 0.17.5\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    natten_compat.uninstall()
    _forget_natten()


def test_an_installed_natten_is_not_shadowed(installed_natten):
    with pytest.warns(UserWarning, match=r'a NATTEN is installed .*install\(force=True\)'):
        assert natten_compat.install() is False
    import natten
    assert natten.REAL and importlib.metadata.version('natten') == '0.17.5'


def test_force_serves_natten_over_an_installed_one_until_uninstall(installed_natten):
    import natten
    assert natten.REAL
    assert natten_compat.install(force=True) is True
    served = importlib.import_module('natten')
    assert served.__version__ == '0.17.4+natmm' and not hasattr(served, 'REAL')
    assert importlib.metadata.version('natten') == '0.17.4+natmm'
    natten_compat.uninstall()
    assert importlib.import_module('natten') is natten
    assert importlib.metadata.version('natten') == '0.17.5'
