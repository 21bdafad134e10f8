"""NeighborhoodAttention2D: the module around na2d."""
import pytest
import torch

from nat_mm.ops import NeighborhoodAttention2D, na2d_reference


@pytest.mark.parametrize('height,width', [(1, 1), (3, 5), (6, 13)])
def test_module_pads_small_inputs_like_natten_0_14(height, width):
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(16, 2, kernel_size=7).eval()
    x = torch.randn(2, height, width, 16)
    # By hand: zero-pad the input to 7 along short axes, qkv, attend, crop, proj.
    padded = torch.zeros(2, max(height, 7), max(width, 7), 16)
    padded[:, :height, :width] = x
    qkv = attn.qkv(padded).view(*padded.shape[:3], 3, 2, 8).permute(3, 0, 4, 1, 2, 5)
    attended = na2d_reference(qkv[0], qkv[1], qkv[2], 7, 1, attn.rpb)
    attended = attended.permute(0, 2, 3, 1, 4).flatten(3)[:, :height, :width]
    torch.testing.assert_close(attn(x), attn.proj(attended), atol=1e-5, rtol=1e-4)


def test_module_matches_reference_composition_with_gradients():
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(32, 4, kernel_size=5, dilation=2)
    x = torch.randn(2, 17, 23, 32, requires_grad=True)
    out = attn(x)
    qkv = attn.qkv(x).view(2, 17, 23, 3, 4, 8).permute(3, 0, 4, 1, 2, 5)
    ref = na2d_reference(qkv[0], qkv[1], qkv[2], 5, 2, attn.rpb)
    ref = attn.proj(ref.permute(0, 2, 3, 1, 4).flatten(3))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    grads = torch.autograd.grad(out.square().sum(), [x, attn.rpb, attn.qkv.weight])
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, attn.rpb, attn.qkv.weight])
    for got, expected in zip(grads, ref_grads):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_module_under_cpu_autocast_bfloat16_has_gradients():
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(32, 2)
    x = torch.randn(1, 14, 15, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attn(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), attn(x), atol=5e-2, rtol=5e-2)
    out.float().sum().backward()
    assert attn.rpb.grad is not None and torch.isfinite(attn.rpb.grad).all()
    assert attn.rpb.grad.abs().sum() > 0


@pytest.mark.slow
def test_module_runs_under_torch_compile_with_gradients():
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(16, 2, kernel_size=3, dilation=2)
    x = torch.randn(1, 9, 11, 16, requires_grad=True)
    compiled = torch.compile(attn, fullgraph=False, dynamic=False)
    results = []
    for module in (compiled, attn):
        out = module(x)
        results.append((out, *torch.autograd.grad(out.square().sum(), [x, attn.rpb])))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('kwargs,message', [
    (dict(kernel_size=4), 'kernel_size must be an odd int >= 3, got 4'),
    (dict(kernel_size=1), 'kernel_size must be an odd int >= 3, got 1'),
    (dict(dilation=0), 'dilation must be an int >= 1, got 0'),
    (dict(dim=30, num_heads=4), 'dim (30) must be divisible by num_heads (4)'),
])
def test_module_rejects_bad_configuration(kwargs, message):
    args = dict(dim=32, num_heads=4) | kwargs
    with pytest.raises(ValueError) as error:
        NeighborhoodAttention2D(**args)
    assert str(error.value) == f'NeighborhoodAttention2D: {message}'


def test_module_rejects_bad_input():
    attn = NeighborhoodAttention2D(32, 4)
    with pytest.raises(ValueError) as error:
        attn(torch.randn(2, 32, 8))
    assert str(error.value) == ('NeighborhoodAttention2D expects (B, H, W, C) input, got shape '
                                '(2, 32, 8)')
    with pytest.raises(ValueError) as error:
        attn(torch.randn(1, 8, 8, 16))
    assert str(error.value) == ('NeighborhoodAttention2D: input has 16 channels, expected 32 (its '
                                'dim): give 32-channel maps, or build it with dim=16')
