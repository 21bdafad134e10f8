"""The test environment is complete: every test dependency setup.cfg declares is installed
(so that no test of it can be skipped instead), the OpenMMLab stack is the pinned one with
mmcv's compiled ops running on CPU, and the Triton backend runs here. What a missing piece
does to the other tests: tests/environment.py (the ``matrix`` profile lacks the stack).

The torch release is the one ``make setup`` installed: ``TORCH_VERSION`` when set (e.g. the
torch 2.1 stack, ``TORCH_VERSION=2.1.2 VENV=.venv-torch2.1 make test``), else the default of
scripts/torch_versions.txt; torchvision is its pair there."""
import functools
import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from packaging.utils import canonicalize_name

import environment
from environment import (MATRIX_PROFILE, declared_test_requirements, require_backend,
                         require_module)
from nat_mm.compat import triton_unusable_reason

RELEASES = [line.split() for line in (Path(__file__).resolve().parents[1] / 'scripts' /
                                      'torch_versions.txt').read_text().splitlines()
            if line.strip() and not line.startswith('#')]
TORCH_RELEASE = next(release for release in RELEASES
                     if release[0] == os.environ.get('TORCH_VERSION', RELEASES[0][0]))
PINNED_VERSIONS = {
    'torch': TORCH_RELEASE[0],
    'torchvision': TORCH_RELEASE[1],
    'mmcv': '2.1.0',
    'mmengine': '0.10.7',
    'mmdet': '3.3.0',
    'mmseg': '1.2.2',
    'mmpretrain': '1.2.0',
}


@pytest.mark.skipif(MATRIX_PROFILE, reason='a torch-matrix venv has another torch by design')
@pytest.mark.parametrize('package, version', PINNED_VERSIONS.items())
def test_pinned_versions(package, version):
    installed = require_module(package).__version__
    assert installed.split('+')[0] == version


@functools.cache
def _installed_modules():
    """Distribution name (canonical) -> the public top-level modules it installs."""
    modules = {}
    for module, owners in importlib.metadata.packages_distributions().items():
        for owner in owners:
            # (Triton 2.1's top_level.txt also lists 'triton/_C', not a module name)
            if not module.startswith('_') and module.isidentifier():
                modules.setdefault(canonicalize_name(owner), []).append(module)
    return modules


@pytest.mark.parametrize('requirement', declared_test_requirements(), ids=str)
def test_declared_test_dependency_is_installed_and_imports(requirement):
    """Missing or at a version setup.cfg does not accept: the run fails here (and in the tests
    that use it), whatever the profile: the matrix's venvs install the test extras too."""
    problem = environment.requirement_problem(requirement)
    if problem is not None:
        environment.missing(problem, absent_in_matrix=False)
    modules = sorted(_installed_modules().get(canonicalize_name(requirement.name), []))
    assert modules, f'{requirement.name} is installed but provides no module'
    for module in modules:
        require_module(module)


def test_the_triton_backend_runs_here():
    """The suite's Triton tests run the kernels (through the interpreter on a CPU)."""
    require_backend('triton', 'cuda' if torch.cuda.is_available() else 'cpu')


def box_iou(box, other):
    """IoU of two (x1, y1, x2, y2) boxes, areas as (x2 - x1) * (y2 - y1)."""
    width = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    height = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    intersection = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    other_area = (other[2] - other[0]) * (other[3] - other[1])
    return intersection / (area + other_area - intersection)


def greedy_nms(boxes, scores, classes, iou_threshold):
    """Per-class greedy NMS; kept indices by descending score."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for index in order:
        if all(classes[k] != classes[index] or box_iou(boxes[k], boxes[index]) <= iou_threshold
               for k in kept):
            kept.append(index)
    return kept


def test_batched_nms_on_hand_made_boxes():
    from mmcv.ops import batched_nms
    boxes = torch.tensor([
        [0., 0., 10., 10.],   # 0 class 0, kept
        [1., 1., 11., 11.],   # 1 class 0, IoU 81/119 with box 0: suppressed
        [20., 20., 30., 30.],  # 2 class 0, disjoint: kept
        [0., 0., 10., 10.],   # 3 class 1, same box as 0 but another class: kept
        [5., 0., 15., 10.],   # 4 class 1, IoU 1/3 with box 3: kept
        [0., 0., 10., 9.],    # 5 class 1, IoU 0.9 with box 3: suppressed
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.85, 0.95, 0.6])
    classes = torch.tensor([0, 0, 0, 1, 1, 1])

    dets, keep = batched_nms(boxes, scores, classes, dict(type='nms', iou_threshold=0.5))

    assert keep.tolist() == [4, 0, 3, 2]
    torch.testing.assert_close(dets[:, :4], boxes[[4, 0, 3, 2]])
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.95, 0.9, 0.85, 0.7]))


def test_batched_nms_matches_greedy_reference_on_random_boxes():
    from mmcv.ops import batched_nms
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(60, 2, generator=generator) * 40
    sizes = torch.rand(60, 2, generator=generator) * 15 + 2
    boxes = torch.cat([corners, corners + sizes], dim=1)
    scores = torch.rand(60, generator=generator)
    classes = torch.randint(0, 3, (60,), generator=generator)

    _, keep = batched_nms(boxes, scores, classes, dict(type='nms', iou_threshold=0.3))

    expected = greedy_nms(boxes.tolist(), scores.tolist(), classes.tolist(), 0.3)
    assert 0 < len(expected) < 60
    assert keep.tolist() == expected


@pytest.mark.parametrize('aligned, expected', [
    # Pixel centres sit at integer + 0.5: the 4x4 RoI from (2, 2) covers pixel
    # indices 1.5..5.5, its 2x2 bins are centred at index 2.5 and 4.5.
    (True, [[27.5, 29.5], [47.5, 49.5]]),
    # Legacy: RoI coordinates used as pixel indices, bins centred at 3 and 5.
    (False, [[33.0, 35.0], [53.0, 55.0]]),
])
@pytest.mark.parametrize('spatial_scale', [1.0, 0.25])
def test_roi_align_on_linear_ramp(aligned, expected, spatial_scale):
    """Bilinear sampling of f(y, x) = 10 y + x is exact, and the mean of a
    bin's symmetric samples is f at the bin centre. The RoI is given in image
    coordinates, spatial_scale maps it to the 8x8 map's (2, 2)-(6, 6)."""
    from mmcv.ops import RoIAlign
    rows = torch.arange(8.).view(8, 1)
    cols = torch.arange(8.).view(1, 8)
    ramp = 10 * rows + cols
    features = torch.stack([ramp, ramp + 100]).unsqueeze(1)  # (2, 1, 8, 8)
    corners = [coordinate / spatial_scale for coordinate in (2., 2., 6., 6.)]
    rois = torch.tensor([[0., *corners], [1., *corners]])  # (batch index, x1, y1, x2, y2)
    roi_align = RoIAlign(output_size=(2, 2), spatial_scale=spatial_scale, sampling_ratio=2,
                         aligned=aligned)

    pooled = roi_align(features, rois)

    expected = torch.tensor(expected)
    torch.testing.assert_close(pooled, torch.stack([expected, expected + 100]).unsqueeze(1))


@pytest.mark.parametrize('package, model', [('mmdet', 'MaskRCNN'), ('mmseg', 'UPerHead')])
def test_downstream_models_import(package, model):
    require_module(f'{package}.models')
    found = require_module(f'{package}.registry').MODELS.get(model)
    assert (found.__module__.split('.')[:2], found.__name__) == ([package, 'models'], model)


def test_declared_requirements_honour_environment_markers(tmp_path):
    setup_cfg = tmp_path / 'setup.cfg'
    setup_cfg.write_text(textwrap.dedent('''\
        [options.extras_require]
        tests =
            pytest>=7
            # a comment
            triton>=3.6; platform_system == "NoSuchSystem"
            numpy; python_version >= "3"
        '''))
    assert [str(r) for r in declared_test_requirements(setup_cfg)] == [
        'pytest>=7', 'numpy; python_version >= "3"']
    names = {r.name for r in declared_test_requirements()}
    assert {'hypothesis', 'huggingface_hub', 'onnxruntime', 'pytest-xdist'} <= names
    assert ('triton' in names) == sys.platform.startswith('linux')


@pytest.mark.parametrize('profile, module, outcome', [
    ('default', 'mmdet', pytest.fail), ('default', 'huggingface_hub', pytest.fail),
    ('matrix', 'mmdet', pytest.skip), ('matrix', 'huggingface_hub', pytest.fail)])
def test_a_missing_module_fails_but_the_stack_skips_in_the_matrix(monkeypatch, profile, module,
                                                                  outcome):
    """``None`` in sys.modules makes ``import`` fail as if the module were not installed."""
    monkeypatch.setenv(environment.PROFILE_ENV, profile)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(outcome.Exception) as error:
        require_module(module)
    message = str(error.value)
    assert message.startswith(f'{module} cannot be imported (import of {module} halted')
    if outcome is pytest.skip:
        assert message.endswith('(NAT_MM_TEST_PROFILE=matrix)')
    else:
        assert message.endswith('the test environment is incomplete; run `make setup` (or '
                                '`pip install -e ".[tests]"` in this venv); in a torch-matrix '
                                'venv without the OpenMMLab stack set NAT_MM_TEST_PROFILE=matrix')


@pytest.mark.parametrize('profile, outcome', [('default', pytest.fail), ('matrix', pytest.skip)])
def test_an_unavailable_triton_backend_skips_only_in_the_matrix(monkeypatch, profile, outcome,
                                                                fresh_availability):
    """Without TRITON_INTERPRET=1 Triton cannot run on a CPU (as with a Triton too old)."""
    if triton_unusable_reason() is not None:
        pytest.skip(f'{triton_unusable_reason()}: require_backend skips for that in every '
                    'profile, before this check')
    monkeypatch.setenv(environment.PROFILE_ENV, profile)
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    with pytest.raises(outcome.Exception, match=(
            r"the 'triton' attention backend cannot run on cpu \(triton [^;]+; "
            r"TRITON_INTERPRET='0'\)")):
        require_backend('triton', 'cpu')


@pytest.mark.parametrize('profile, error, skipped_for', [
    ('matrix', ModuleNotFoundError("No module named 'mmdet'", name='mmdet.models'), 'mmdet'),
    ('matrix', ModuleNotFoundError('mmsegmentation is not installed, please install '
                                   'mmsegmentation manually'), 'mmseg'),   # MMEngine's Config
    ('matrix', ModuleNotFoundError("No module named 'onnx'", name='onnx'), None),
    ('matrix', ImportError('cannot import name x from mmdet', name='mmdet'), None),
    ('default', ModuleNotFoundError("No module named 'mmdet'", name='mmdet'), None)])
def test_which_import_errors_the_matrix_skips(monkeypatch, profile, error, skipped_for):
    monkeypatch.setenv(environment.PROFILE_ENV, profile)
    assert environment.absent_in_matrix(error) == skipped_for


def test_the_matrix_profile_reports_a_test_importing_the_stack_as_skipped(tmp_path):
    """tests/conftest.py's report hook, in a pytest run of its own: a test whose import of
    mmdet fails is skipped, naming mmdet; one whose huggingface_hub import fails still fails."""
    (tmp_path / 'test_probe.py').write_text(textwrap.dedent('''\
        import sys

        sys.modules['mmdet'] = sys.modules['huggingface_hub'] = None


        def test_uses_mmdet():
            import mmdet.models  # noqa: F401


        def test_uses_the_hub():
            import huggingface_hub  # noqa: F401
        '''))
    tests = Path(__file__).parent
    run = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'conftest', '-p', 'no:cacheprovider', '-rsf',
         '-q', str(tmp_path / 'test_probe.py')], capture_output=True, text=True, timeout=300,
        cwd=tmp_path, env=dict(os.environ, NAT_MM_TEST_PROFILE='matrix',
                               PYTHONPATH=os.pathsep.join([str(tests), str(tests.parent)])))
    assert 'SKIPPED [1] test_probe.py:6: needs mmdet (not in a torch-matrix venv)' \
        in run.stdout, run.stdout
    assert '1 failed, 1 skipped' in run.stdout
    assert 'FAILED test_probe.py::test_uses_the_hub' in run.stdout
