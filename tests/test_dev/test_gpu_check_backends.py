"""dev/gpu_check.py's comparison of the backends (which one wins where): its cases are NAT-T's
and DiNAT-T's stages, and it runs on the CPU with the CPU's backends."""
import pytest
import torch


@pytest.fixture(scope='module')
def gpu_check(load_dev_script):
    return load_dev_script('gpu_check')


def test_stage_cases_are_every_stage_of_nat_t_and_dinat_t(gpu_check):
    """512x512, batch 2: maps 128 ... 16, NAT-T's heads 2 ... 16 (head_dim 32), K 7, and
    the dilations of DiNAT-T's UperNet config once each (stage 1: 1 and 16; stage 3:
    1 to 4); every map holds its window."""
    cases = gpu_check.stage_cases()
    shapes = {(heads, size, dilation) for _, heads, size, _, _, _, dilation in cases.values()}
    assert {(2, 128, 1), (4, 64, 1), (8, 32, 1), (16, 16, 1)} <= shapes
    assert {(2, 128, 16), (8, 32, 2), (8, 32, 3), (8, 32, 4)} <= shapes
    for name, (batch, heads, height, width, head_dim, kernel, dilation) in cases.items():
        assert batch == 2 and head_dim == 32 and kernel == 7 and height == width
        assert height >= kernel * dilation, name
        assert ('DiNAT-T' in name) == (dilation > 1)


def test_backends_on_cpu_leave_out_the_forward_only_ones(gpu_check):
    assert 'flex' not in gpu_check.backends_for('cpu')
    assert 'csr' in gpu_check.backends_for('cpu')


def test_compare_backends_times_every_backend_and_names_the_fastest(gpu_check, tmp_path):
    section = gpu_check.Section('compare')
    report = gpu_check.Report(tmp_path, [], budget_s=600)
    case = {'tiny (B1 h2 14x15 d16 dil2)': (1, 2, 14, 15, 16, 7, 2)}
    wins = gpu_check.compare_backends(section, report, torch.device('cpu'), ['csr', 'export'],
                                      case, ('bfloat16',), repeats=1)
    rows = [line for line in section.lines if line.startswith('tiny')]
    assert [row.split()[7] for row in rows] == ['fwd', 'fwd+bwd']
    for row in rows:
        fields = row.split()
        times = [float(t) for t in fields[8:10]]
        fastest = fields[10]
        assert fastest == ('csr', 'export')[times.index(min(times))]
        errors = [float(e.rstrip(',')) for e in fields[11:13]]
        assert all(0 < error < 4e-2 for error in errors)
    assert sum(wins.values()) == 2 and set(wins) <= {'csr', 'export'}
    assert section.lines[-1].startswith('fastest (rows won): ')
