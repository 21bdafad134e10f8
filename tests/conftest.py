"""Shared by every test: the Triton interpreter flag, the Hypothesis profiles, the one
way to load a script of tools/ (or dev/), the skips of the torch matrix's profile, and
``fresh_availability`` for tests that change what an attention backend finds.

Without CUDA, Triton kernels run through Triton's interpreter: the flag must
be set before the kernels are defined (nat_mm.ops.triton_kernels, imported by
nat_mm.ops.triton_na), so it is set here, before any test module imports nat_mm.

Test profiles (``NAT_MM_TEST_PROFILE``, decided in one place: tests/environment.py): the
default is the pinned stack of ``make setup``, where everything is installed and a missing
package is an error. ``matrix`` is a venv of the torch matrix (``dev/torch_matrix.py``:
torch, mmengine and the test extras only): there a test (or a test module) that fails to
import the OpenMMLab stack (:data:`MATRIX_ABSENT`) is reported skipped, naming the module.

Hypothesis profiles of the property tests (``tests/*/test_*_properties.py``),
chosen with ``HYPOTHESIS_PROFILE`` (default ``ci``):

- ``ci``: derandomized (the same examples on every run), a fixed number of
  examples; a failure prints the reproducing example and its
  ``@reproduce_failure`` blob.
- ``soak``: random examples, many more; for a long local run
  (``HYPOTHESIS_PROFILE=soak pytest tests -k properties``).
"""
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

# tests/environment.py imports nat_mm: after the flag
from environment import MATRIX_ABSENT, MATRIX_PROFILE, absent_in_matrix  # noqa: E402

# Under pytest-xdist (make test runs one worker per core) each worker gets its share of the
# cores: two workers each running torch's default of one thread per core would fight.
if 'PYTEST_XDIST_WORKER_COUNT' in os.environ:
    _workers = int(os.environ['PYTEST_XDIST_WORKER_COUNT'])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))

# No 'explain' phase: it reruns a failing example hundreds of times (minutes here).
_COMMON = dict(deadline=None, print_blob=True,
               phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile('ci', max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile('soak', max_examples=2200, **_COMMON)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))


if MATRIX_PROFILE:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(collector):
        outcome = yield
        report = outcome.get_result()
        longrepr = str(report.longrepr or '')
        module = next((name for name, package in MATRIX_ABSENT.items()
                       if f"No module named '{name}" in longrepr
                       or f'{package} is not installed' in longrepr), None)
        if report.failed and module:
            report.outcome = 'skipped'
            report.longrepr = (str(collector.path), 0,
                               f'Skipped: needs {module} (not in a torch-matrix venv)')

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        outcome = yield
        report = outcome.get_result()
        module = absent_in_matrix(call.excinfo.value) if call.excinfo is not None else None
        if report.failed and module:
            report.outcome = 'skipped'
            report.longrepr = (str(item.path), (item.location[1] or 0) + 1,
                               f'Skipped: needs {module} (not in a torch-matrix venv)')


REPO_ROOT = Path(__file__).resolve().parents[1]
#: Hub-layout checkpoints with Transformers + NATTEN's feature maps (from ../shared/golden/hf).
HF_DATA = REPO_ROOT / 'tests' / 'data' / 'hf'


def _script_path(name):
    """REPO_ROOT/<name>.py, e.g. 'tools/analysis_tools/get_flops'; a missing one fails here."""
    path = REPO_ROOT / f'{name}.py'
    if not path.is_file():
        raise FileNotFoundError(f'no script {path}')
    return path


def _load_script(name):
    """The script as a module. Its folder leads sys.path while it loads, as when Python runs
    it (tools/train.py imports its sibling tools/demo.py)."""
    path = _script_path(name)
    spec = importlib.util.spec_from_file_location(name.replace('/', '_'), path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


@pytest.fixture(scope='session')
def load_tool():
    """Function: ``load_tool('analysis_tools/get_flops')`` is tools/analysis_tools/get_flops.py
    as a module (tools/ is not a package), loaded afresh."""
    return lambda name: _load_script(f'tools/{name}')


@pytest.fixture(scope='session')
def tool_path():
    """Function: the path of tools/<name>.py, to run the script in a subprocess."""
    return lambda name: _script_path(f'tools/{name}')


@pytest.fixture(scope='session')
def load_dev_script():
    """Function: ``load_dev_script('gpu_check')`` is dev/gpu_check.py as a module."""
    return lambda name: _load_script(f'dev/{name}')


@pytest.fixture
def fresh_availability():
    """nat_mm's backend seam asks every backend again whether it runs, during the test (after
    the test's changes to what a backend finds) and after it (once they are undone)."""
    from nat_mm.ops import backends
    backends.clear_availability_cache()
    yield
    backends.clear_availability_cache()


@pytest.fixture
def logged():
    """The messages MMEngine's current logger records during the test (a list that grows)."""
    from mmengine.logging import MMLogger
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture(scope='session')
def assert_transformers_features():
    """Function: ``assert_transformers_features(checkpoint, folder)`` builds NAT from
    tests/data/hf/<folder>/config.json with ``checkpoint`` as its pretrained file and asserts
    its four feature maps equal Transformers + NATTEN's (golden.pt, float64, rtol 1e-9)."""
    def check(checkpoint, folder):
        from nat_mm import NAT
        from nat_mm.models.checkpoint import from_transformers_layout, nat_arguments
        data = torch.load(HF_DATA / folder / 'golden.pt', weights_only=True)
        arguments = nat_arguments(json.loads((HF_DATA / folder / 'config.json').read_text()))
        model = NAT(**arguments, init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
        model.init_weights()
        # the output norms are not in a backbone checkpoint: Transformers' own ones
        model.load_state_dict(from_transformers_layout(data['backbone_norms'])[0], strict=False)
        with torch.no_grad():
            outputs = model.double().eval()(data['input'])
        assert len(outputs) == len(data['feature_maps']) == 4
        for output, expected in zip(outputs, data['feature_maps']):
            torch.testing.assert_close(output, expected, rtol=1e-9, atol=0)
    return check

