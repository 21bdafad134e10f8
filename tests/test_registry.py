"""nat_mm.registry puts models into mmdet's and mmseg's MODELS, and nat_mm
(operator and backbone) needs neither of them, nor mmcv, to import."""
import subprocess
import sys
import textwrap
from pathlib import Path

from torch import nn

from nat_mm.registry import register_model

REPO_ROOT = Path(__file__).resolve().parents[1]


class RegistryProbe(nn.Module):

    def __init__(self, width=1):
        super().__init__()
        self.width = width


def test_register_model_builds_through_mmdet_and_mmseg():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS

    assert register_model(RegistryProbe, name='NatMmRegistryProbe') == ['mmdet', 'mmseg']

    for registry in (MMDET_MODELS, MMSEG_MODELS):
        model = registry.build(dict(type='NatMmRegistryProbe', width=3))
        assert type(model) is RegistryProbe
        assert model.width == 3


def test_register_model_defaults_to_the_class_name():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS

    class NatMmDefaultNameProbe(RegistryProbe):
        pass

    register_model(NatMmDefaultNameProbe)
    assert MMDET_MODELS.get('NatMmDefaultNameProbe') is NatMmDefaultNameProbe
    assert MMSEG_MODELS.get('NatMmDefaultNameProbe') is NatMmDefaultNameProbe


def run_python(code):
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_nat_mm_alone_registers_the_backbone():
    """What ``custom_imports=dict(imports=['nat_mm'])`` in a config relies on."""
    output = run_python('''
        import nat_mm
        from mmdet.registry import MODELS as MMDET_MODELS
        from mmseg.registry import MODELS as MMSEG_MODELS
        assert MMDET_MODELS.get('NAT') is nat_mm.NAT
        assert MMSEG_MODELS.get('NAT') is nat_mm.NAT
        print('ok')
    ''')
    assert output.strip().endswith('ok')


def test_nat_mm_needs_only_torch_and_mmengine():
    """mmcv, mmdet and mmseg made unimportable, as if not installed: a ``None``
    entry in sys.modules makes ``import`` raise ModuleNotFoundError and
    ``importlib.util.find_spec`` return None."""
    output = run_python('''
        import sys
        BLOCKED = ('mmcv', 'mmdet', 'mmseg')
        for name in BLOCKED:
            sys.modules[name] = None
        try:
            import mmdet  # noqa: F401
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError('the block does not work')

        import torch
        import nat_mm
        import nat_mm.ops
        from nat_mm.models import NAT  # noqa: F401
        from nat_mm.registry import register_model

        assert register_model(type('Probe', (), {})) == []
        query = torch.randn(1, 2, 7, 7, 4)
        assert nat_mm.ops.na2d(query, query, query, kernel_size=7).shape == query.shape
        leaked = [name for name, module in sys.modules.items()
                  if name.split('.')[0] in BLOCKED and module is not None]
        assert not leaked, leaked
        print('ok')
    ''')
    assert output.strip().endswith('ok')
