"""An MMEngine hook for tests/test_tools/test_crash_resume.py: the training stops itself in
the middle of writing a chosen checkpoint, so that the test's SIGKILL lands mid-write every
time (a kill timed from outside can come before the write starts or after it ends).

MMEngine's local file backend writes a checkpoint with one ``LocalBackend.put(bytes, path)``
of the serialised checkpoint; for the chosen file the hook's ``put`` writes the first half
of those bytes, flushes them to disk, records ``<bytes written> <bytes in all>`` in the
marker file (created whole, by a rename), and stops the process (SIGSTOP) until it is killed.
"""
import os
import signal
from pathlib import Path

from mmengine.fileio import LocalBackend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class StopWhileWritingCheckpoint(Hook):
    """Stop half-way through writing the checkpoint named ``filename`` (e.g. ``iter_4.pth``);
    ``marker``: the file that says it happened (the test waits for it)."""

    def __init__(self, filename, marker):
        self.filename, self.marker = filename, Path(marker)

    def before_run(self, runner):
        write = LocalBackend.put

        def put(backend, obj, filepath):
            if Path(filepath).name != self.filename:
                return write(backend, obj, filepath)
            written = len(obj) // 2
            with open(filepath, 'wb') as file:
                file.write(obj[:written])
                file.flush()
                os.fsync(file.fileno())
                partial = self.marker.with_suffix('.partial')
                partial.write_text(f'{written} {len(obj)}')
                partial.replace(self.marker)
                os.kill(os.getpid(), signal.SIGSTOP)

        LocalBackend.put = put
