"""The matmul form of adaptive average pooling: PyTorch's windows at every size, and a
dynamic export that stays exact at sizes other than the example's."""
import pytest
import torch
import torch.nn.functional as F
from environment import requires_torch_export
from torch import nn

from nat_mm.deploy import OnnxModel, export_onnx, max_differences
from nat_mm.deploy.pooling import MatmulAdaptiveAvgPool2d, exportable_adaptive_pooling


@pytest.mark.parametrize('size', [(7, 7), (4, 5), (1, 1), (13, 3), (25, 33)])
@pytest.mark.parametrize('output_size', [1, 2, 3, 6, (2, None), (None, 4)])
def test_matches_adaptive_avg_pool2d(size, output_size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    expected = F.adaptive_avg_pool2d(x, output_size)
    got = MatmulAdaptiveAvgPool2d(output_size)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_swapped_for_the_block_only():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.AdaptiveAvgPool2d(3)))
    original = model[1][0]
    with exportable_adaptive_pooling(model):
        assert isinstance(model[1][0], MatmulAdaptiveAvgPool2d)
        assert model[1][0].output_size == (3, 3)
    assert model[1][0] is original


@pytest.mark.slow
@requires_torch_export
def test_a_dynamic_export_pools_correctly_at_other_sizes(tmp_path):
    # stride 32 then 6x6 cells: at 97x131 the map is 4x5, smaller than the output
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=32, padding=1),
                          nn.AdaptiveAvgPool2d(6)).eval()
    path = str(tmp_path / 'pool.onnx')
    export_onnx(model, (224, 224), path, dynamic=True)
    assert isinstance(model[1], nn.AdaptiveAvgPool2d)      # restored after the export
    session = OnnxModel(path)
    for size in [(224, 224), (97, 131), (512, 683), (32, 32)]:
        image = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = model(image)
        assert max_differences([expected], session(image))[0] <= 1e-5, size
