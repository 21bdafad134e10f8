"""Runs the test suite on other torch releases: one venv per release with torch, mmengine
and nat_mm's test extras only (no mmcv, mmdet, mmseg, mmpretrain), the suite in the
``matrix`` profile (tests that need the OpenMMLab stack, or a Triton the kernels
support, skip and say why), and one Markdown table row per release.

    make test-torch TORCH=2.1.2          # one release
    make test-torch TORCH=all            # every release of scripts/torch_versions.txt
    python dev/torch_matrix.py 2.1.2 2.4.1 --table docs/torch_matrix.md -- -m "not slow"

Venvs are kept under ``.venv-torch/<release>`` (``--venv-root``) and re-used while
setup.cfg and the release's line are unchanged. Needs only the standard library.
"""
import argparse
import collections
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASES_FILE = ROOT / 'scripts' / 'torch_versions.txt'
#: What the venv gets besides torch; everything else comes from nat_mm's `tests` extra.
STACK = ('mmengine==0.10.7', 'setuptools>=77,<82', 'wheel')
TABLE_HEADER = ('| torch | CUDA build | Triton | numpy | passed | skipped | failed | time |\n'
                '|---|---|---|---|---|---|---|---|')


def releases():
    """{torch version: extra pip requirement or None}, in the file's order."""
    table = {}
    for line in RELEASES_FILE.read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            torch_version, _, _, extra = line.split()
            table[torch_version] = None if extra == '-' else extra
    return table


def run(command, log, **kwargs):
    """Runs ``command``, appending its output to ``log``; raises with the log's tail on failure."""
    with open(log, 'a') as out:
        out.write(f'$ {" ".join(map(str, command))}\n')
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if result.returncode:
        tail = '\n'.join(Path(log).read_text().splitlines()[-20:])
        raise RuntimeError(f'{" ".join(map(str, command))} failed ({result.returncode}):\n{tail}')


def make_venv(version, extra, venv, log):
    """The venv for torch ``version`` (created or re-used); returns its python."""
    python = venv / 'bin' / 'python'
    pins = [f'torch=={version}', *STACK] + ([extra] if extra else [])
    stamp = venv / '.nat_mm_matrix_stamp'
    wanted = (ROOT / 'setup.cfg').read_text() + ' '.join(pins)
    digest = hashlib.sha256(wanted.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return python
    started = time.time()
    print(f'[matrix] torch {version}: setting up {venv} (log: {log})', flush=True)
    if not python.exists():
        run([sys.executable, '-m', 'venv', venv], log)
    with tempfile.NamedTemporaryFile('w', suffix='.txt', delete=False) as constraints:
        constraints.write('\n'.join(pins) + '\n')
    pip = [python, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
           '-c', constraints.name]
    try:
        # PyPI's torch wheel, the site pip configuration ignored (its find-links may hold
        # another build of the same release)
        run([python, '-m', 'pip', '--isolated', 'install', '--quiet', '-c', constraints.name,
             f'torch=={version}', *([extra] if extra else [])], log)
        run(pip + list(STACK), log)
        run(pip + ['--no-build-isolation', '-e', f'{ROOT}[tests]'], log, cwd=ROOT)
    finally:
        os.unlink(constraints.name)
    stamp.write_text(digest)
    print(f'[matrix] torch {version}: set up in {time.time() - started:.0f}s', flush=True)
    return python


def versions_in(python):
    """(torch, CUDA build, Triton, numpy) versions of the venv of ``python``."""
    code = ('import importlib.metadata as m, torch\n'
            'def v(name):\n'
            '    try: return m.version(name)\n'
            '    except m.PackageNotFoundError: return "-"\n'
            'print(torch.__version__, torch.version.cuda or "-", v("triton"), v("numpy"))')
    return subprocess.run([python, '-c', code], capture_output=True, text=True,
                          check=True).stdout.split()


def junit_counts(path):
    """(passed, skipped, failed, skip reasons Counter) of a pytest junit file."""
    counts = collections.Counter()
    reasons = collections.Counter()
    for case in ET.parse(path).getroot().iter('testcase'):
        outcome = next((child for child in case if child.tag in ('failure', 'error', 'skipped')),
                       None)
        if outcome is None:
            counts['passed'] += 1
        elif outcome.tag == 'skipped':
            counts['skipped'] += 1
            if outcome.get('type') != 'pytest.xfail':
                reasons[outcome.get('message', '').split('\n')[0][:160]] += 1
        else:
            counts['failed'] += 1
    return counts['passed'], counts['skipped'], counts['failed'], reasons


def test_release(version, extra, venv_root, workers, pytest_args, setup_only=False):
    """Sets up the release's venv, runs the suite; returns its table row and failure count
    (None, 0 with ``setup_only``)."""
    venv = venv_root / f'torch-{version}'
    venv_root.mkdir(parents=True, exist_ok=True)
    log = venv_root / f'torch-{version}.log'
    python = make_venv(version, extra, venv, log)
    if setup_only:
        return None, 0
    junit = venv_root / f'torch-{version}.junit.xml'
    command = [python, '-m', 'pytest', 'tests', '-q', '-p', 'no:cacheprovider',
               f'--junitxml={junit}', *(['-n', str(workers), '--dist', 'loadfile']
                                        if workers else []), *pytest_args]
    print(f'[matrix] torch {version}: {" ".join(map(str, command[1:]))}', flush=True)
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, 'NAT_MM_TEST_PROFILE': 'matrix'},
                            capture_output=True, text=True)
    seconds = time.time() - started
    (venv_root / f'torch-{version}.pytest.log').write_text(result.stdout + result.stderr)
    if not junit.exists():
        raise RuntimeError(f'pytest on torch {version} wrote no results:\n{result.stdout[-3000:]}'
                           f'{result.stderr[-3000:]}')
    passed, skipped, failed, reasons = junit_counts(junit)
    torch_version, cuda, triton, numpy = versions_in(python)
    print(f'[matrix] torch {version}: {passed} passed, {skipped} skipped, {failed} failed in '
          f'{seconds:.0f}s; skip reasons:', flush=True)
    for reason, count in reasons.most_common():
        print(f'[matrix]   {count:4d} x {reason}')
    if failed:
        print('\n'.join(result.stdout.splitlines()[-40:]))
    return (f'| {torch_version} | {cuda} | {triton} | {numpy} | {passed} | {skipped} | '
            f'{failed} | {seconds / 60:.0f}:{seconds % 60:02.0f} |'), failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('versions', nargs='*', help='torch releases (default: all of '
                        'scripts/torch_versions.txt)')
    parser.add_argument('--venv-root', type=Path, default=ROOT / '.venv-torch')
    parser.add_argument('--workers', type=int, default=min(os.cpu_count() or 1, 4),
                        help='pytest-xdist workers (0: one process)')
    parser.add_argument('--table', type=Path, help='also write the Markdown table here')
    parser.add_argument('--setup-only', action='store_true',
                        help='make the venvs, run no test (e.g. while the machine is busy)')
    argv = sys.argv[1:] if argv is None else argv
    pytest_args = argv[argv.index('--') + 1:] if '--' in argv else []
    parser.epilog = 'Arguments after -- go to pytest.'
    args = parser.parse_args(argv[:argv.index('--')] if '--' in argv else argv)
    known = releases()
    versions = args.versions or list(known)
    unknown = [version for version in versions if version not in known]
    if unknown:
        parser.error(f'unknown torch release(s) {unknown}: choose from {list(known)} '
                     '(scripts/torch_versions.txt)')
    rows, failures = [], 0
    for version in versions:
        row, failed = test_release(version, known[version], args.venv_root, args.workers,
                                   pytest_args, args.setup_only)
        rows.append(row)
        failures += failed
    if args.setup_only:
        return 0
    table = '\n'.join([TABLE_HEADER, *rows])
    print(table)
    if args.table:
        args.table.write_text(table + '\n')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
