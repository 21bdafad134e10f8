"""The console commands nat_mm installs: setup.cfg names them, each runs as a module under its
command's name, the tools/ scripts run the same main, and no package message names a tools/
script that ``pip install nat_mm`` would not install."""
import ast
import configparser
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nat_mm

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(nat_mm.__file__).parent
#: (command, its module, the tools/ script that runs it).
COMMANDS = [('nat-mm-download', 'nat_mm.cli.download', 'misc/download_checkpoints'),
            ('nat-mm-convert', 'nat_mm.cli.convert', 'model_converters/nat2mm')]
#: Package modules outside nat_mm/cli that still parse command lines (issue 33 moves them out).
ARGPARSE_ELSEWHERE = {'utils/profiling.py'}


@pytest.mark.parametrize('command, module, script', COMMANDS)
def test_setup_cfg_installs_the_command(command, module, script):
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / 'setup.cfg')
    scripts = setup['options.entry_points']['console_scripts'].split('\n')
    assert f'{command} = {module}:main' in scripts


@pytest.mark.parametrize('command, module, script', COMMANDS)
def test_runs_as_a_module_under_the_commands_name(command, module, script):
    result = subprocess.run([sys.executable, '-m', module, '--help'], capture_output=True,
                            text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f'usage: {command} [-h]')


@pytest.mark.parametrize('command, module, script', COMMANDS)
def test_the_tools_script_runs_the_same_main(load_tool, command, module, script):
    """tools/ keeps the scripts where OpenMMLab users look for them, a few lines each."""
    assert load_tool(script).main is importlib.import_module(module).main
    assert len((REPO_ROOT / 'tools' / f'{script}.py').read_text().splitlines()) < 10


def _package_files():
    return sorted(path for path in PACKAGE_DIR.rglob('*.py'))


def test_only_the_commands_parse_command_lines():
    importers = set()
    for path in _package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            if 'argparse' in names:
                importers.add(path.relative_to(PACKAGE_DIR).as_posix())
    assert {'cli/download.py', 'cli/convert.py'} <= importers
    assert importers - ARGPARSE_ELSEWHERE <= {'cli/download.py', 'cli/convert.py'}


def test_no_package_message_names_a_checkpoint_script_of_tools():
    named = [f'{path.relative_to(PACKAGE_DIR)}:{number}' for path in _package_files()
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r'tools/(misc|model_converters)/', line)]
    assert not named
