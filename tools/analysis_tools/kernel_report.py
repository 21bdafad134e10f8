"""Registers, spills, shared memory and occupancy of the Triton backend's kernels
on NVIDIA GPUs, compiled on this machine: no GPU, no driver.

Compiles the forward, dQ and dK/dV kernels with the launch parameters the
backend chooses (:mod:`nat_mm.ops.triton_report`) for every combination of
the options, prints a table, and with ``--json FILE`` writes one record per
compile. Run it without ``TRITON_INTERPRET=1``. Each compile takes seconds:
the full default grid is long; narrow it with the options.

    python tools/analysis_tools/kernel_report.py --dtype bf16 --kernel-size 7 \\
        --head-dim 32 --rpb yes --dropout no --arch 80 90

``--triton-versions 3.6.0 3.7.1 3.9.0`` runs the same report once per Triton
version, each in a virtual environment under ``--venv-root`` (created on
first use: this interpreter's packages, torch and nat_mm included, plus that
Triton from the package registry).
"""
import argparse
import json
import os
import site
import subprocess
import sys
import tempfile
from pathlib import Path

from nat_mm.ops import triton_report

YES_NO = {'yes': True, 'no': False}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--kernel', nargs='+', choices=triton_report.KERNELS,
                        default=list(triton_report.KERNELS),
                        help='forward, dQ and dK/dV kernels')
    parser.add_argument('--arch', type=int, nargs='+', default=[80, 86, 89, 90],
                        help='compute capabilities, e.g. 80 (A100) 90 (H100)')
    parser.add_argument('--dtype', nargs='+', choices=list(triton_report.DTYPES),
                        default=list(triton_report.DTYPES))
    parser.add_argument('--kernel-size', type=int, nargs='+', default=[3, 5, 7, 9, 11, 13])
    parser.add_argument('--head-dim', type=int, nargs='+', default=[16, 32, 64, 128])
    parser.add_argument('--rpb', nargs='+', choices=list(YES_NO), default=['yes', 'no'])
    parser.add_argument('--dropout', nargs='+', choices=list(YES_NO), default=['no', 'yes'])
    parser.add_argument('--json', metavar='FILE', help='write the records here')
    parser.add_argument('--jobs', type=int, default=1, help='compiles run in this many processes')
    parser.add_argument('--summary', action='store_true',
                        help='print the worst case per kernel, arch, dtype, head_dim, dropout '
                             '(over K and rpb) instead of every row')
    parser.add_argument('--triton-versions', nargs='+', metavar='VERSION',
                        help='run the report once per Triton version, each in its own venv')
    parser.add_argument('--venv-root', default=str(Path.home() / '.cache' / 'nat_mm_triton_venvs'),
                        help='where the --triton-versions environments live')
    args = parser.parse_args(argv)
    for k in args.kernel_size:
        if k < 3 or k % 2 == 0 or k > 13:
            parser.error(f'--kernel-size {k}: the kernels take odd K from 3 to 13')
    return args


def _say(line):
    print(f'kernel_report: {line}', file=sys.stderr, flush=True)


def run_report(args):
    """The report in this interpreter: (records, exit status)."""
    import triton
    try:
        records = []
        for record in triton_report.report(
                args.arch, args.dtype, args.kernel_size, args.head_dim,
                [YES_NO[x] for x in args.rpb], [YES_NO[x] for x in args.dropout], on_error=_say,
                jobs=args.jobs, kernels=args.kernel):
            records.append(record)
            _say(f"{record['kernel']} sm_{record['arch']} {record['dtype']} "
                 f"K{record['kernel_size']} D{record['head_dim']}: {record['registers']} "
                 f"registers, {record['spill_bytes']} B spilled")
    except triton_report.ReportError as err:
        _say(str(err))
        return [], 1
    print(f'\ntriton {triton.__version__}\n')
    print((triton_report.format_summary if args.summary else triton_report.format_table)(
        records))
    return records, 0 if records else 1


def _venv(root, version):
    """Python of the venv for Triton ``version`` (created when missing), or
    None after one line saying why it cannot be made."""
    path = Path(root) / f'triton-{version}'
    python = path / 'bin' / 'python'
    marker = path / '.triton-installed'
    if marker.exists():
        return python
    steps = [[sys.executable, '-m', 'venv', str(path)],
             [str(python), '-m', 'pip', 'install', '--quiet', '--no-deps',
              f'triton=={version}']]
    for i, step in enumerate(steps):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ['(no output)']
            _say(f'triton {version}: cannot install ({lines[-1]})')
            return None
        if i == 0:   # this interpreter's packages (torch, nat_mm) after the venv's own
            purelib = subprocess.run([str(python), '-c', 'import sysconfig; print('
                                      'sysconfig.get_paths()["purelib"])'],
                                     capture_output=True, text=True, check=True).stdout.strip()
            lines = [f'import site; site.addsitedir({p!r})' for p in site.getsitepackages()]
            Path(purelib, 'nat_mm_base.pth').write_text('\n'.join(lines) + '\n')
    marker.touch()
    return python


def run_matrix(args, argv):
    """--triton-versions: one report per version; the JSON maps version -> records."""
    passed = [a for a in _strip_option(argv, '--triton-versions') if a]
    passed = _strip_option(passed, '--json')
    results, status = {}, 0
    for version in args.triton_versions:
        python = _venv(args.venv_root, version)
        if python is None:
            status = 1
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, 'records.json')
            done = subprocess.run([str(python), __file__, *passed, '--json', out])
            if done.returncode != 0 or not os.path.exists(out):
                _say(f'triton {version}: the report failed (exit status {done.returncode})')
                status = 1
                continue
            results[version] = json.loads(Path(out).read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return status if results else 1


def _strip_option(argv, name):
    """argv without ``name`` and the values that follow it."""
    out, skipping = [], False
    for arg in argv:
        if arg.startswith('--'):
            skipping = arg == name or arg.startswith(name + '=')
            if skipping:
                continue
        if not skipping:
            out.append(arg)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.triton_versions:
        return run_matrix(args, argv)
    records, status = run_report(args)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return status


if __name__ == '__main__':
    sys.exit(main())
