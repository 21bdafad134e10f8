"""The CSR backend's own structure (its numbers are tested in test_functional/test_golden)."""
import pytest
import torch

from nat_mm.ops import csr, na2d
from na_testing import make_qkv


@pytest.mark.parametrize('kernel,dilation', [(3, 1), (5, 2)])
def test_transposed_pattern_is_the_transpose(kernel, dilation):
    plan = csr.csr_plan(2, 3, 11, 13, kernel, dilation)
    n = 2 * 3 * 11 * 13
    values = torch.arange(1., len(plan.col) + 1, dtype=torch.float64)

    def dense(crow, col, vals):
        return torch.sparse_csr_tensor(crow.long(), col.long(), vals, size=(n, n)).to_dense()

    pattern = dense(plan.crow, plan.col, values)
    assert ((pattern > 0).sum(1) == kernel * kernel).all()
    torch.testing.assert_close(dense(plan.t_crow, plan.t_col, values[plan.t_perm]), pattern.T,
                               rtol=0, atol=0)


def test_cpu_inputs_run_the_csr_backend_by_default():
    _, q, k, v = make_qkv(1, 2, 9, 9, 8)
    before = csr.csr_plan.cache_info().misses + csr.csr_plan.cache_info().hits
    na2d(q, k, v, 3)
    after = csr.csr_plan.cache_info().misses + csr.csr_plan.cache_info().hits
    assert after > before


def test_half_precision_inputs_are_computed_in_float32_and_returned_as_given():
    _, q, k, v = make_qkv(1, 2, 9, 9, 8)
    out = na2d(q.half(), k.half(), v.half(), 3, backend='csr')
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), na2d(q.half().float(), k.half().float(),
                                                 v.half().float(), 3), atol=1e-3, rtol=1e-3)
