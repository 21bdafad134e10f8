"""nat_mm.utils.profiling: interleaved medians and peak memory (CPU here; CUDA on a GPU)."""
import sys
import time

import pytest
import torch

from nat_mm.utils import profiling


def test_interleaved_medians_calls_every_candidate_in_turn():
    """Each candidate times its own body (which sleeps 1 ms) with the same clock: a call's
    timer brackets the body, so the median lies between the middle body time and the time of
    the whole measurement (in seconds, not another unit; no assumption on speed)."""
    calls, bodies = [], {name: [] for name in 'abc'}

    def candidate(name):
        def call():
            begin = time.perf_counter()
            calls.append(name)
            time.sleep(1e-3)
            bodies[name].append(time.perf_counter() - begin)
        return call

    begin = time.perf_counter()
    times = profiling.interleaved_medians({name: candidate(name) for name in 'abc'}, repeats=3,
                                          warmup=1)
    whole = time.perf_counter() - begin
    assert calls == ['a', 'b', 'c'] * 4          # one warm-up round, then 3 timed rounds
    assert set(times) == {'a', 'b', 'c'}
    for name, median in times.items():
        timed = sorted(bodies[name][1:])           # the warm-up call is not timed
        assert 1e-3 <= timed[1] <= median <= whole, (name, timed, median, whole)


def test_interleaved_medians_takes_the_median(monkeypatch):
    """Each call of ``elapsed`` returns the next of a fixed list of durations."""
    durations = iter([5.0, 1.0, 3.0, 2.0, 4.0, 9.0])
    monkeypatch.setattr(profiling, 'elapsed', lambda fn, device: next(durations))
    times = profiling.interleaved_medians({'x': lambda: None, 'y': lambda: None}, repeats=3,
                                          warmup=0)
    assert times == {'x': 4.0, 'y': 2.0}          # x: 5, 3, 4; y: 1, 2, 9


def test_interleaved_medians_refuses_no_repeats():
    with pytest.raises(ValueError, match=r'^interleaved_medians: repeats must be >= 1, got 0$'):
        profiling.interleaved_medians({'x': lambda: None}, repeats=0)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='VmHWM is Linux-only')
def test_cpu_peak_memory_sees_a_freed_allocation(tmp_path):
    """64 MiB written and freed inside the call: its peak counts, though nothing is held
    after it. In a fresh process: in this one, pages freed by earlier tests can be reused
    without growing the resident set."""
    size = 64 * 2 ** 20
    probe = tmp_path / 'allocate.py'
    probe.write_text('import torch\nfrom nat_mm.utils import profiling\n'
                     f'print(profiling.peak_memory(lambda: torch.ones({size // 4}), "cpu"))\n')
    assert profiling.peak_memory_in_fresh_process([str(probe)]) >= 0.9 * size


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='VmHWM is Linux-only')
def test_peak_memory_in_fresh_process_reads_the_last_line(tmp_path):
    probe = tmp_path / 'probe.py'
    probe.write_text('import os\nprint("some log line")\n'
                     'print(os.environ["MALLOC_MMAP_THRESHOLD_"])\n')
    assert profiling.peak_memory_in_fresh_process([str(probe)]) == 64 * 1024
    probe.write_text('raise SystemExit("probe broke")\n')
    with pytest.raises(RuntimeError, match='probe broke'):
        profiling.peak_memory_in_fresh_process([str(probe)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_peak_memory_and_timing():
    device = torch.device('cuda')
    size = 64 * 2 ** 20
    assert profiling.peak_memory(lambda: torch.ones(size // 4, device=device), device) >= size
    times = profiling.interleaved_medians({'x': lambda: torch.ones(16, device=device)}, 2,
                                          device)
    assert times['x'] > 0
    assert profiling.timer_name(device) == 'CUDA events'
