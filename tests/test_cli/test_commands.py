"""The console commands nat_mm installs: setup.cfg names them, each runs as a module under its
command's name, and the tools/ scripts run the same main. (That no package message names a
repository script: tests/test_package_layout.py.)"""
import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
#: (command, its module, the tools/ script that runs it).
COMMANDS = [('nat-mm-download', 'nat_mm.cli.download', 'misc/download_checkpoints'),
            ('nat-mm-convert', 'nat_mm.cli.convert', 'model_converters/nat2mm')]


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

