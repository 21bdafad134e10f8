"""nat_mm registers its models into MMEngine's root MODELS, where mmdet's and mmseg's
registries find them by parent lookup; ``import nat_mm`` imports neither of them, nor mmcv,
and works without them."""
import subprocess
import sys
import textwrap
from pathlib import Path

from environment import requires_stack
from mmengine.registry import MODELS

import nat_mm
from nat_mm.registry import register_models

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_python(code):
    """Run ``code`` in a fresh interpreter (nothing imported yet); its stdout."""
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_nat_is_in_the_root_registry():
    assert MODELS.scope == 'mmengine' and MODELS.parent is None
    assert MODELS.get('NAT') is nat_mm.NAT


def test_register_models_into_another_registry():
    from mmengine.registry import Registry
    registry = Registry('probe')
    register_models(registry)
    model = registry.build(dict(type='NAT', arch='mini', out_indices=(3, )))
    assert type(model) is nat_mm.NAT and model.out_indices == (3, )
    register_models(registry)  # again: replaces, no error
    assert registry.get('NAT') is nat_mm.NAT


@requires_stack('mmdet', 'mmseg')
def test_import_leaves_mmdet_mmseg_mmcv_out_and_both_registries_build_nat():
    """What ``custom_imports=dict(imports=['nat_mm'])`` in a config relies on."""
    output = run_python('''
        import sys
        import nat_mm
        downstream = ('mmcv', 'mmdet', 'mmseg')
        print('imported:', sorted({name.split('.')[0] for name in sys.modules}
                                  & set(downstream)))

        from mmengine.registry import init_default_scope
        from mmdet.registry import MODELS as MMDET_MODELS
        from mmseg.registry import MODELS as MMSEG_MODELS
        assert MMDET_MODELS.parent.scope == MMSEG_MODELS.parent.scope == 'mmengine'
        for scope, registry in (('mmdet', MMDET_MODELS), ('mmseg', MMSEG_MODELS)):
            init_default_scope(scope)  # as a config's default_scope does
            model = registry.build(dict(type='NAT', arch='mini', out_indices=(1, 2)))
            assert type(model) is nat_mm.NAT, type(model)
            assert model.out_indices == (1, 2)
        print('built')
    ''')
    assert output.split('\n')[:2] == ['imported: []', 'built']


def test_nat_mm_needs_only_torch_and_mmengine():
    """mmcv, mmdet, mmseg and OpenCV made unimportable, as if not installed: a ``None``
    entry in sys.modules makes ``import`` raise ModuleNotFoundError."""
    output = run_python('''
        import sys
        for name in ('mmcv', 'mmdet', 'mmseg', 'cv2'):
            sys.modules[name] = None
        try:
            import mmdet  # noqa: F401
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError('the block does not work')

        import torch
        import nat_mm
        from mmengine.registry import MODELS
        model = MODELS.build(dict(type='NAT', arch='mini'))
        query = torch.randn(1, 2, 7, 7, 4)
        assert nat_mm.na2d(query, query, query, kernel_size=7).shape == query.shape
        assert [f.shape[1] for f in model(torch.randn(1, 3, 32, 32))] == [64, 128, 256, 512]
        print('ok')
    ''')
    assert output.strip() == 'ok'
