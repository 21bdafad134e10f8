"""The line between the package and its tools, and the size of its rooms: read from the
source of nat_mm/ (each test names the offending file and line)."""
import ast
import re
from pathlib import Path

import pytest

import nat_mm

PACKAGE_DIR = Path(nat_mm.__file__).resolve().parent
SOURCES = sorted(PACKAGE_DIR.rglob('*.py'))
#: The one sub-package that parses command lines: the console entry points and the
#: options the tools share.
COMMAND_LINE_PACKAGE = PACKAGE_DIR / 'cli'
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80
#: A path of the repository's scripts, which ``pip install nat_mm`` does not install.
REPOSITORY_SCRIPT = re.compile(r'\b(?:tools|dev|scripts)/[\w/.-]+\.(?:py|sh)\b')


def _relative(path):
    return path.relative_to(PACKAGE_DIR.parent).as_posix()


def _parsed(path):
    return ast.parse(path.read_text(), str(path))


def _docstrings(tree):
    """ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _imported_modules(tree):
    """[(line, module name)] of every import statement, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module


def _is_triton_kernel(function):
    return any('jit' in ast.unparse(decorator) for decorator in function.decorator_list)


def test_no_file_is_over_the_size_limit():
    long_files = {_relative(path): lines for path in SOURCES
                  if (lines := len(path.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long_files, f'files over {MAX_FILE_LINES} lines: {long_files}'


def test_no_function_is_over_the_size_limit_except_triton_kernels():
    long_functions = []
    for path in SOURCES:
        for node in ast.walk(_parsed(path)):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and not _is_triton_kernel(node)
                    and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES):
                long_functions.append(f'{_relative(path)}:{node.lineno} {node.name} '
                                      f'({node.end_lineno - node.lineno + 1} lines)')
    assert not long_functions, f'functions over {MAX_FUNCTION_LINES} lines: {long_functions}'


def test_only_the_command_line_package_parses_command_lines():
    parsers = [f'{_relative(path)}:{line}' for path in SOURCES
               if COMMAND_LINE_PACKAGE not in path.parents
               for line, module in _imported_modules(_parsed(path)) if module == 'argparse']
    assert not parsers, f'argparse imported outside nat_mm/cli: {parsers}'
    # the check sees what it looks for
    assert any(module == 'argparse' for path in COMMAND_LINE_PACKAGE.rglob('*.py')
               for _, module in _imported_modules(_parsed(path)))


def test_no_private_triton_api_is_imported():
    private = [f'{_relative(path)}:{line} {module}' for path in SOURCES
               for line, module in _imported_modules(_parsed(path))
               if module.split('.')[0] == 'triton'
               and any(part.startswith('_') for part in module.split('.'))]
    assert not private, f'private Triton modules imported: {private}'


def test_no_message_names_a_script_that_pip_does_not_install():
    """Error and log messages (string literals other than docstrings) name console entry
    points, not the repository's tools/, dev/ or scripts/ files."""
    named = []
    for path in SOURCES:
        tree = _parsed(path)
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings):
                named += [f'{_relative(path)}:{node.lineno} {script}'
                          for script in REPOSITORY_SCRIPT.findall(node.value)]
    assert not named, f'messages naming repository scripts: {named}'


@pytest.mark.parametrize('message, names_a_script', [
    ('run python tools/misc/download_checkpoints.py NAME', True),
    ('see dev/gpu_check.py', True),
    ('bash scripts/setup_env.sh', True),
    ('nat-mm-download NAME', False),
    ('the tools and dev folders', False),
])
def test_the_script_pattern(message, names_a_script):
    assert bool(REPOSITORY_SCRIPT.search(message)) == names_a_script
