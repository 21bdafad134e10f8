"""Time and peak memory, measured one way for every benchmark and comparison of nat_mm.

- :func:`interleaved_medians`: median seconds per call of several candidates,
  repeats interleaved (call i of every candidate before call i + 1 of any), so
  that all of them see the same machine load; each call timed by
  :func:`elapsed` (CUDA events on CUDA, ``time.perf_counter`` elsewhere).
- :func:`peak_memory`: peak bytes one call holds beyond what was held before
  it: ``torch.cuda.max_memory_allocated`` on CUDA; on a CPU the growth of the
  process's peak resident set (VmHWM, reset first through
  ``/proc/self/clear_refs``; Linux only). ``ru_maxrss`` is not used: it cannot
  be reset, and Linux carries it across fork + exec, so a child of a big
  process starts with its parent's peak.
- :func:`peak_memory_in_fresh_process`: runs a command that prints one
  :func:`peak_memory` result, in a fresh process (a process's peak RSS also
  counts memory freed earlier and reused unseen).
- :func:`attention_inputs`: the random q, k, v and rpb the attention benchmarks time.

Only torch is needed.
"""
import os
import re
import statistics
import subprocess
import sys
import time

import torch

#: Environment of :func:`peak_memory_in_fresh_process`'s child: a fixed glibc
#: mmap threshold returns every freed block >= 64 KiB to the OS, so memory freed
#: by a warm-up call cannot be reused unseen by the measured call.
FRESH_PROCESS_ENV = {'MALLOC_MMAP_THRESHOLD_': str(64 * 1024)}


def synchronize(device):
    """Waits for the work queued on ``device`` (a no-op off CUDA)."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def device_name(device):
    """The GPU's name, or the CPU and its torch thread count, for report headers."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'CPU, {torch.get_num_threads()} threads'


def timer_name(device):
    """What :func:`elapsed` measures with on ``device``, for report headers."""
    return 'CUDA events' if torch.device(device).type == 'cuda' else 'perf_counter'


def elapsed(fn, device='cpu'):
    """Seconds one call of ``fn()`` takes on ``device``.

    On CUDA the time between two CUDA events recorded around the call (the
    GPU's own clock, after the queue is drained first, so earlier work does
    not count); elsewhere ``time.perf_counter`` around the call.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def interleaved_medians(candidates, repeats, device='cpu', warmup=1):
    """Median seconds per call of each candidate, measured interleaved.

    Args:
        candidates: dict key -> zero-argument callable, called in dict order.
        repeats: timed calls per candidate (>= 1).
        device: where the candidates run (CUDA: timed with CUDA events).
        warmup: untimed calls of every candidate first (caches, allocator,
            kernel compilation).

    Returns:
        dict key -> median seconds.
    """
    if repeats < 1:
        raise ValueError(f'interleaved_medians: repeats must be >= 1, got {repeats}')
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times = {key: [] for key in candidates}
    for _ in range(repeats):
        for key, fn in candidates.items():
            times[key].append(elapsed(fn, device))
    return {key: statistics.median(values) for key, values in times.items()}


def _proc_status_bytes(field):
    """A memory field (VmRSS, VmHWM) of /proc/self/status, in bytes."""
    with open('/proc/self/status') as status:
        match = re.search(rf'^{field}:\s+(\d+) kB', status.read(), re.M)
    if match is None:
        raise RuntimeError(f'{field} not in /proc/self/status')
    return int(match[1]) * 1024


def _reset_peak_rss():
    """Resets this process's peak RSS (VmHWM) to its current RSS; returns that RSS."""
    try:
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
    except OSError as error:
        raise RuntimeError('peak memory on a CPU needs Linux /proc/self/clear_refs '
                           f'({error})') from error
    return _proc_status_bytes('VmRSS')


def peak_memory(fn, device='cpu'):
    """Peak bytes ``fn()`` holds beyond what was held before the call.

    On CUDA ``torch.cuda.max_memory_allocated`` during the call minus
    ``memory_allocated`` before it; elsewhere the growth of this process's
    peak resident set (VmHWM after resetting it, minus VmRSS before; Linux).
    Warm ``fn`` up first: memory of lazily built caches counts otherwise.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    base = _reset_peak_rss()
    fn()
    return _proc_status_bytes('VmHWM') - base


def peak_memory_in_fresh_process(argv):
    """Runs ``python argv...`` in a fresh process and returns the integer its
    last output line holds (the :func:`peak_memory` the command measured), with
    :data:`FRESH_PROCESS_ENV` set.

    Raises:
        RuntimeError: the command failed (its stderr's end is in the message).
    """
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                            env=dict(os.environ, **FRESH_PROCESS_ENV))
    if result.returncode:
        raise RuntimeError(f'memory probe {" ".join(argv)} failed:\n{result.stderr[-3000:]}')
    return int(result.stdout.strip().splitlines()[-1])


def attention_inputs(batch, heads, height, width, head_dim, kernel, device, dtype, seed=0):
    """q, k, v: (B, heads, H, W, head_dim) ~ N(0, 1) and rpb (heads, 2K-1, 2K-1)
    ~ N(0, 0.02^2), all in ``dtype`` on ``device``, requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, height, width, head_dim, generator=gen)
               .to(device, dtype).requires_grad_() for _ in range(3))
    rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen) * 0.02
    return q, k, v, rpb.to(device, dtype).requires_grad_()
