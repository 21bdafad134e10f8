"""NATTEN 0.20+'s Python API (``na2d``, ``NeighborhoodAttention2D``), computed by nat_mm.

NATTEN 0.20 kept only the fused operator, in the heads-last layout
(B, H, W, heads, D), without relative position bias, and added ``stride``.
nat_mm computes stride 1, non-causal, square windows; the rest raises
NotImplementedError (:mod:`.arguments`). NATTEN's kernel choices (``backend``,
tile shapes, schedules, ``torch_compile``, ...) do not change the result and
are accepted and ignored.
"""
from ..ops import NeighborhoodAttention2D as _NatMMAttention
from .arguments import no_additional_kv, no_stride, not_2d, refuse, window
from .compute import heads_last_na2d

#: The NATTEN release this API is reported as (see :data:`.v0_17.NATTEN_VERSION`).
NATTEN_VERSION = '0.20.1'

#: Keyword arguments of NATTEN 0.20 / 0.21's ``na2d`` that only pick its kernels.
KERNEL_OPTIONS = frozenset((
    'backend', 'q_tile_shape', 'kv_tile_shape', 'backward_q_tile_shape',
    'backward_kv_tile_shape', 'backward_kv_splits', 'backward_use_pt_reduction',
    'run_persistent_kernel', 'kernel_schedule', 'torch_compile', 'try_fuse_additional_kv'))


def na2d(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
         additional_keys=None, additional_values=None, attention_kwargs=None,
         return_lse=False, **kernel_options):
    """NATTEN 0.20's ``natten.na2d`` (also ``natten.functional.na2d``):
    (B, H, W, heads, D) query, key, value -> (B, H, W, heads, D),
    softmax(scale * q . k) over each query's neighbourhood (scale default
    head_dim ** -0.5). ``kernel_size`` / ``dilation``: an int or an equal pair."""
    unknown = sorted(set(kernel_options) - KERNEL_OPTIONS)
    if unknown:
        raise TypeError(f'na2d() got unexpected keyword arguments {unknown} (NATTEN 0.20+ '
                        f'has {sorted(KERNEL_OPTIONS)} besides the attention arguments)')
    no_stride('na2d', stride)
    kernel_size, dilation = window('na2d', kernel_size, dilation, is_causal)
    no_additional_kv('na2d', '0.20+', additional_keys=additional_keys,
                     additional_values=additional_values)
    if return_lse:
        refuse('na2d', 'return_lse', return_lse, 'returning the logsumexp', '0.20+',
               'pass return_lse=False')
    return heads_last_na2d('na2d', query, key, value, kernel_size, dilation, scale=scale)


class NeighborhoodAttention2D(_NatMMAttention):
    """NATTEN 0.20's ``NeighborhoodAttention2D``: its constructor, parameter names
    (``qkv``, ``proj``; no rpb) and numbers.

    Input (B, H, W, embed_dim) -> (B, H, W, embed_dim). Maps smaller than
    ``kernel_size * dilation``, which NATTEN refuses, are zero-padded as in
    :class:`nat_mm.NeighborhoodAttention2D`.
    """

    def __init__(self, embed_dim, num_heads, kernel_size, stride=1, dilation=1,
                 is_causal=False, qkv_bias=True, qk_scale=None, proj_drop=0.0):
        no_stride('NeighborhoodAttention2D', stride)
        kernel_size, dilation = window('NeighborhoodAttention2D', kernel_size, dilation,
                                       is_causal)
        super().__init__(embed_dim, num_heads, kernel_size, dilation, qkv_bias=qkv_bias,
                         qk_scale=qk_scale, proj_drop=proj_drop, rel_pos_bias=False)
        self.embed_dim = embed_dim


# 1-D and 3-D names: calling them raises NotImplementedError.
na1d = not_2d('na1d', '0.20+', 'natten')
na3d = not_2d('na3d', '0.20+', 'natten')
NeighborhoodAttention1D = not_2d('NeighborhoodAttention1D', '0.20+', 'natten')
NeighborhoodAttention3D = not_2d('NeighborhoodAttention3D', '0.20+', 'natten')

#: What ``import natten`` gives after ``install(api='0.20')``.
TOP_LEVEL = ('NeighborhoodAttention1D', 'NeighborhoodAttention2D', 'NeighborhoodAttention3D',
             'na1d', 'na2d', 'na3d')
#: What ``natten.functional`` gives after ``install(api='0.20')``.
FUNCTIONAL = ('na1d', 'na2d', 'na3d')
