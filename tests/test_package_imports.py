"""The package's import structure: no import cycle between nat_mm's modules, not even
through imports inside functions, and the operator and backbone importable with torch and
mmengine alone."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nat_mm

PACKAGE_DIR = Path(nat_mm.__file__).resolve().parent
#: What ``import nat_mm`` and the import of any of its modules must leave out.
DOWNSTREAM = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'cv2')


def module_name(path, root, package):
    """'nat_mm.ops.functional' for ROOT/ops/functional.py, 'nat_mm.ops' for its __init__."""
    parts = list(path.relative_to(root).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join([package, *parts])


def _resolve(name, level, importer, is_package):
    """The absolute module name of ``from <level dots><name> import ...`` in ``importer``."""
    if level == 0:
        return name
    base = importer.split('.')
    base = base[:len(base) - level + (1 if is_package else 0)]
    return '.'.join(base + ([name] if name else []))


def import_graph(root, package):
    """{module: {imported module: line}} over every module of the package at ``root``.

    Every ``import`` / ``from ... import`` statement counts, wherever it is (module level,
    inside functions, under ``if``/``try``), and every ``importlib.import_module`` call with
    a literal name. ``from package.x import y`` counts as importing ``package.x.y`` when
    that is a module, else ``package.x``.
    """
    modules = {module_name(path, root, package): path for path in sorted(root.rglob('*.py'))}
    graph = {}
    for name, path in modules.items():
        is_package = path.name == '__init__.py'
        edges = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(node.module or '', node.level, name, is_package)
                targets = [f'{source}.{alias.name}' if f'{source}.{alias.name}' in modules
                           else source for alias in node.names]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == 'import_module' and node.args
                  and isinstance(node.args[0], ast.Constant)):
                targets = [node.args[0].value]
            for target in targets:
                while target not in modules and '.' in target:   # 'nat_mm.ops.na2d' -> ops
                    target = target.rsplit('.', 1)[0]
                if target in modules and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One import cycle of ``graph`` as a list [a, b, ..., a], or None."""
    state = {}          # module -> 'open' while on the DFS stack, 'done' after

    def visit(module, stack):
        state[module] = 'open'
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 'open':
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = 'done'
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            if cycle:
                return cycle
    return None


def describe_cycle(cycle, graph, package):
    """'a -> b (a.py line 3) -> a (b.py line 9)'."""
    steps = [cycle[0]]
    for importer, imported in zip(cycle, cycle[1:]):
        file = importer.replace(package, '', 1).lstrip('.').replace('.', '/') or '__init__'
        line = graph[importer][imported]
        steps.append(f'{imported} ({file}.py line {line})')
    return ' -> '.join(steps)


def test_nat_mm_has_no_import_cycle():
    graph = import_graph(PACKAGE_DIR, 'nat_mm')
    assert {'nat_mm.ops.functional', 'nat_mm.ops.triton_na', 'nat_mm.models.presets',
            'nat_mm.models.checkpoint.checks', 'nat_mm.models.backbones.nat'} <= set(graph)
    # the edges the cycles of the past went through are seen: the backends' loaders import
    # their modules inside functions (ops/backends.py), the seam imports the registry
    assert 'nat_mm.ops.triton_na' in graph['nat_mm.ops.backends']
    assert 'nat_mm.ops.backends' in graph['nat_mm.ops.functional']
    assert 'nat_mm.models.presets' in graph['nat_mm.models.checkpoint.checks']
    cycle = find_cycle(graph)
    assert cycle is None, 'import cycle: ' + describe_cycle(cycle, graph, 'nat_mm')


def test_cycle_finder_sees_imports_inside_functions(tmp_path):
    """The checker itself: a cycle closed by a function-level relative import, as
    nat_mm's backbone and checkpoint modules had, is found and named."""
    root = tmp_path / 'pkg'
    (root / 'models').mkdir(parents=True)
    (root / '__init__.py').write_text('from .models import Net\n')
    (root / 'models' / '__init__.py').write_text('from .net import Net\n')
    (root / 'models' / 'net.py').write_text('from .loading import load\n\nclass Net:\n    pass\n')
    (root / 'models' / 'loading.py').write_text(textwrap.dedent('''\
        import os


        def load(path):
            from .net import Net  # closes the cycle
            return Net()
    '''))
    graph = import_graph(root, 'pkg')
    assert graph['pkg.models.loading'] == {'pkg.models.net': 5}
    cycle = find_cycle(graph)
    assert cycle == ['pkg.models.net', 'pkg.models.loading', 'pkg.models.net']
    assert describe_cycle(cycle, graph, 'pkg') == (
        'pkg.models.net -> pkg.models.loading (models/net.py line 1) -> '
        'pkg.models.net (models/loading.py line 5)')
    (root / 'models' / 'loading.py').write_text('def load(path):\n    return path\n')
    assert find_cycle(import_graph(root, 'pkg')) is None


@pytest.mark.parametrize('module', ['nat_mm', 'nat_mm.ops', 'nat_mm.models',
                                    'nat_mm.deploy', 'nat_mm.utils.profiling'])
def test_import_leaves_mmcv_mmdet_mmseg_and_opencv_out(module):
    """In a fresh interpreter: the operator, the backbone, the launch helpers, the deploy
    package and the profiler import nothing of the detection / segmentation / classification
    stack."""
    code = textwrap.dedent(f'''
        import sys
        import {module}
        print(sorted({{name.split('.')[0] for name in sys.modules}} & {set(DOWNSTREAM)!r}))
    ''')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300, cwd=PACKAGE_DIR.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]'
