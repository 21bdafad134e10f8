"""Bad input to both NATTEN APIs: a NotImplementedError naming the argument and the NATTEN
version that has it for what nat_mm does not compute; nat_mm.na2d's ValueErrors for wrong
shapes; a TypeError for a keyword NATTEN does not have."""
import pytest
import torch

from nat_mm.natten_compat import v0_17, v0_20

Q, K, V = (torch.randn(1, 2, 8, 8, 4) for _ in range(3))          # heads first
QL, KL, VL = (torch.randn(1, 8, 8, 2, 4) for _ in range(3))       # heads last
EXTRA = torch.randn(1, 5, 2, 4)                                    # additional keys / values

#: name: (error, message pattern, call)
BAD_INPUT = {
    # NATTEN 0.14 - 0.17 API
    '0.17 causal': (NotImplementedError,
                    r'na2d_qk: is_causal=True: causal .*NATTEN 0\.17\+.*pass is_causal=False',
                    lambda: v0_17.na2d_qk(Q, K, 3, 1, is_causal=True)),
    '0.17 causal on one axis': (NotImplementedError,
                                r'na2d: is_causal=\(False, True\).*NATTEN 0\.17\+',
                                lambda: v0_17.na2d(QL, KL, VL, 3, 1, is_causal=(False, True))),
    '0.17 kernel per axis': (NotImplementedError,
                             r'na2d_av: kernel_size=\(3, 5\): a different value per axis '
                             r'\(NATTEN 0\.17\+\).*kernel_size=3 or 5',
                             lambda: v0_17.na2d_av(torch.randn(1, 2, 8, 8, 15), V, (3, 5))),
    '0.17 dilation per axis': (NotImplementedError, r'na2d: dilation=\(1, 2\).*NATTEN 0\.17\+',
                               lambda: v0_17.na2d(QL, KL, VL, 3, (1, 2))),
    '0.17 additional keys': (NotImplementedError,
                             r'na2d_qk: additional_keys=.*NATTEN 0\.15\.1\+.*additional_keys=None',
                             lambda: v0_17.na2d_qk(Q, K, 3, 1, EXTRA)),
    '0.17 additional values': (NotImplementedError, r'na2d: additional_values=.*NATTEN 0\.17\+',
                               lambda: v0_17.na2d(QL, KL, VL, 3, additional_values=EXTRA)),
    '0.17 causal module': (NotImplementedError, r'NeighborhoodAttention2D: is_causal=True',
                           lambda: v0_17.NeighborhoodAttention2D(8, 2, 3, is_causal=True)),
    '0.14 1-D': (NotImplementedError,
                 r'natten\.functional\.natten1dqkrpb \(NATTEN 0\.14\+\): 1-D .*2-D',
                 lambda: v0_17.natten1dqkrpb(None, None, None, 3, 1)),
    '0.15 1-D': (NotImplementedError, r'natten\.functional\.na1d_qk \(NATTEN 0\.15\+\): 1-D',
                 lambda: v0_17.na1d_qk(None, None, 3)),
    '0.17 3-D': (NotImplementedError, r'natten\.functional\.na3d \(NATTEN 0\.17\+\): 3-D',
                 lambda: v0_17.na3d(None, None, None, 3)),
    '0.17 3-D module': (NotImplementedError,
                        r'natten\.NeighborhoodAttention3D \(NATTEN 0\.15\+\): 3-D',
                        lambda: v0_17.NeighborhoodAttention3D(8, 2, 3)),
    '0.14 query not 5-D': (ValueError, r'query must have 5 dims',
                           lambda: v0_17.natten2dqkrpb(Q[0], K[0], None, 3, 1)),
    '0.17 key shape': (ValueError, r'shapes disagree',
                       lambda: v0_17.na2d_qk(Q, K[:, :, :7], 3)),
    '0.17 rpb shape': (ValueError, r'rpb must have shape \(heads, 2K-1, 2K-1\) = \(2, 5, 5\)',
                       lambda: v0_17.na2d_qk(Q, K, 3, rpb=torch.randn(2, 7, 7))),
    '0.17 map smaller than window': (ValueError, r'smaller than kernel_size \* dilation',
                                     lambda: v0_17.na2d_qk(Q, K, 3, 3)),
    '0.14 attn size': (ValueError,
                       r'attn must have shape \(B, heads, H, W, K\*K\) = \(1, 2, 8, 8, 9\)',
                       lambda: v0_17.natten2dav(torch.randn(1, 2, 8, 8, 10), V, 3, 1)),
    '0.17 attn dtype': (ValueError, r'same dtype and device',
                        lambda: v0_17.na2d_av(torch.randn(1, 2, 8, 8, 9).double(), V, 3)),
    '0.17 even kernel': (ValueError, r'kernel_size must be an odd int',
                         lambda: v0_17.na2d_qk(Q, K, 4)),
    '0.17 fused 4-D': (ValueError, r'na2d: query must be \(B, H, W, heads, head_dim\)',
                       lambda: v0_17.na2d(QL[0], KL, VL, 3)),
    '0.17 kernel of three axes': (ValueError, r'kernel_size must be an int or one value per axis',
                                  lambda: v0_17.na2d_qk(Q, K, (3, 3, 3))),
    # NATTEN 0.20+ API
    '0.20 stride': (NotImplementedError,
                    r'na2d: stride=2: strided neighbourhood attention \(NATTEN 0\.20\+\).*'
                    r'pass stride=1',
                    lambda: v0_20.na2d(QL, KL, VL, 3, 2)),
    '0.20 stride per axis': (NotImplementedError,
                             r'na2d: stride=\(1, 2\): a different value per axis',
                             lambda: v0_20.na2d(QL, KL, VL, 3, stride=(1, 2))),
    '0.20 causal': (NotImplementedError, r'na2d: is_causal=\(True, True\): causal',
                    lambda: v0_20.na2d(QL, KL, VL, 3, is_causal=(True, True))),
    '0.20 kernel per axis': (NotImplementedError, r'na2d: kernel_size=\(3, 5\)',
                             lambda: v0_20.na2d(QL, KL, VL, (3, 5))),
    '0.20 additional keys': (NotImplementedError, r'na2d: additional_keys=.*NATTEN 0\.20\+',
                             lambda: v0_20.na2d(QL, KL, VL, 3, additional_keys=EXTRA,
                                                additional_values=EXTRA)),
    '0.20 return_lse': (NotImplementedError,
                        r'na2d: return_lse=True: returning the logsumexp \(NATTEN 0\.20\+\)',
                        lambda: v0_20.na2d(QL, KL, VL, 3, return_lse=True)),
    '0.20 strided module': (NotImplementedError, r'NeighborhoodAttention2D: stride=3',
                            lambda: v0_20.NeighborhoodAttention2D(8, 2, 3, stride=3)),
    '0.20 causal module': (NotImplementedError, r'NeighborhoodAttention2D: is_causal=True',
                           lambda: v0_20.NeighborhoodAttention2D(8, 2, 3, is_causal=True)),
    '0.20 1-D': (NotImplementedError, r'natten\.na1d \(NATTEN 0\.20\+\): 1-D',
                 lambda: v0_20.na1d(None, None, None, 3)),
    '0.20 3-D module': (NotImplementedError, r'natten\.NeighborhoodAttention3D .*3-D',
                        lambda: v0_20.NeighborhoodAttention3D(8, 2, 3)),
    '0.20 unknown keyword': (TypeError, r"unexpected keyword arguments \['tile_shape'\]",
                             lambda: v0_20.na2d(QL, KL, VL, 3, tile_shape=(8, 8))),
    '0.20 key shape': (ValueError, r'shapes disagree',
                       lambda: v0_20.na2d(QL, KL[:, :7], VL, 3)),
    '0.20 map smaller than window': (ValueError, r'smaller than kernel_size \* dilation',
                                     lambda: v0_20.na2d(QL, KL, VL, 5, dilation=2)),
}


@pytest.mark.parametrize('what', BAD_INPUT)
def test_bad_input_raises_a_clear_error(what):
    error, message, call = BAD_INPUT[what]
    with pytest.raises(error, match=message):
        call()
