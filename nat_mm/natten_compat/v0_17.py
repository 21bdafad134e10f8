"""NATTEN 0.14 to 0.17.4's Python API, computed by nat_mm.

The functions NAT-era code calls, with NATTEN's signatures:

- 0.14 (``natten.functional``; also in 0.15 to 0.17.4, what Hugging Face
  Transformers' NAT / DiNAT and the official NAT repository call):
  ``natten2dqkrpb(query, key, rpb, kernel_size, dilation)``,
  ``natten2dqk(query, key, kernel_size, dilation)``,
  ``natten2dav(attn, value, kernel_size, dilation)``;
- 0.15: ``na2d_qk_with_bias(query, key, bias, kernel_size, dilation)``;
- 0.17: ``na2d_qk`` / ``na2d_av`` (split: the attention weights are a tensor
  between the two calls) and the fused ``na2d``; the module
  :class:`NeighborhoodAttention2D`.

The split functions use the (B, heads, H, W, D) layout and attention weights
(B, heads, H, W, K*K) in NATTEN's neighbour order; the fused ``na2d`` uses
0.17's heads-last (B, H, W, heads, D). 1-D and 3-D names exist and raise
NotImplementedError, as do causal masks, per-axis window sizes and additional
keys / values (:mod:`.arguments`).
"""
from ..ops import NeighborhoodAttention2D as _NatMMAttention
from .arguments import no_additional_kv, not_2d, window
from .compute import heads_last_na2d, neighbourhood_logits, neighbourhood_sum

#: The NATTEN release this API is reported as (``natten.__version__``, and
#: ``importlib.metadata.version('natten')`` after :func:`~.install`): the last
#: release with every function above.
NATTEN_VERSION = '0.17.4'


def na2d_qk(query, key, kernel_size, dilation=1, additional_keys=None, is_causal=False,
            rpb=None):
    """NATTEN 0.17's ``na2d_qk``: (B, heads, H, W, D) query and key ->
    (B, heads, H, W, K*K) logits ``q . k`` (+ rpb) over each query's neighbours.
    NATTEN scales nothing here: callers pass ``query * scale``."""
    kernel_size, dilation = window('na2d_qk', kernel_size, dilation, is_causal)
    no_additional_kv('na2d_qk', '0.15.1+', additional_keys=additional_keys)
    return neighbourhood_logits(query, key, kernel_size, dilation, rpb)


def na2d_av(attn, value, kernel_size, dilation=1, additional_values=None, is_causal=False):
    """NATTEN 0.17's ``na2d_av``: (B, heads, H, W, K*K) weights and
    (B, heads, H, W, D) value -> (B, heads, H, W, D)."""
    kernel_size, dilation = window('na2d_av', kernel_size, dilation, is_causal)
    no_additional_kv('na2d_av', '0.15.1+', additional_values=additional_values)
    return neighbourhood_sum(attn, value, kernel_size, dilation)


def na2d(query, key, value, kernel_size, dilation=1, is_causal=False, rpb=None, scale=None,
         additional_keys=None, additional_values=None, xformers_kwargs=None):
    """NATTEN 0.17's fused ``na2d``: (B, H, W, heads, D) query, key, value ->
    (B, H, W, heads, D), softmax(scale * q . k + rpb) over each neighbourhood
    (scale default head_dim ** -0.5). ``xformers_kwargs`` only concerns the
    additional keys / values, which are refused."""
    kernel_size, dilation = window('na2d', kernel_size, dilation, is_causal)
    no_additional_kv('na2d', '0.17+', additional_keys=additional_keys,
                     additional_values=additional_values)
    return heads_last_na2d('na2d', query, key, value, kernel_size, dilation, rpb, scale)


def natten2dqkrpb(query, key, rpb, kernel_size, dilation):
    """NATTEN 0.14's name of :func:`na2d_qk` with a relative position bias."""
    return na2d_qk(query, key, kernel_size, dilation, rpb=rpb)


def natten2dqk(query, key, kernel_size, dilation):
    """NATTEN 0.14's name of :func:`na2d_qk` without bias."""
    return na2d_qk(query, key, kernel_size, dilation)


def natten2dav(attn, value, kernel_size, dilation):
    """NATTEN 0.14's name of :func:`na2d_av`."""
    return na2d_av(attn, value, kernel_size, dilation)


def na2d_qk_with_bias(query, key, bias, kernel_size, dilation, additional_keys=None):
    """NATTEN 0.15's name of :func:`na2d_qk` with a relative position bias."""
    return na2d_qk(query, key, kernel_size, dilation, additional_keys, rpb=bias)


class NeighborhoodAttention2D(_NatMMAttention):
    """NATTEN 0.17's ``NeighborhoodAttention2D``: its constructor, parameter names
    (``qkv``, ``rpb`` when ``rel_pos_bias=True``, ``proj``) and numbers.

    Input (B, H, W, dim) -> (B, H, W, dim). Unlike NATTEN 0.17, which refuses
    maps smaller than ``kernel_size * dilation``, such inputs are zero-padded as
    NATTEN 0.14's module did (see :class:`nat_mm.NeighborhoodAttention2D`).
    ``use_experimental_ops`` chose between NATTEN's own kernels; here it changes nothing.
    """

    def __init__(self, dim, num_heads, kernel_size, dilation=1, is_causal=False,
                 rel_pos_bias=False, qkv_bias=True, qk_scale=None, attn_drop=0.0,
                 proj_drop=0.0, use_experimental_ops=False):
        kernel_size, dilation = window('NeighborhoodAttention2D', kernel_size, dilation,
                                       is_causal)
        super().__init__(dim, num_heads, kernel_size, dilation, qkv_bias=qkv_bias,
                         qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=proj_drop,
                         rel_pos_bias=rel_pos_bias)


# 1-D and 3-D names: calling them raises NotImplementedError.
natten1dqkrpb = not_2d('natten1dqkrpb', '0.14+')
natten1dqk = not_2d('natten1dqk', '0.14+')
natten1dav = not_2d('natten1dav', '0.14+')
natten3dqkrpb = not_2d('natten3dqkrpb', '0.15+')
natten3dqk = not_2d('natten3dqk', '0.15+')
natten3dav = not_2d('natten3dav', '0.15+')
na1d_qk = not_2d('na1d_qk', '0.15+')
na1d_av = not_2d('na1d_av', '0.15+')
na1d_qk_with_bias = not_2d('na1d_qk_with_bias', '0.15')
na3d_qk = not_2d('na3d_qk', '0.15+')
na3d_av = not_2d('na3d_av', '0.15+')
na3d_qk_with_bias = not_2d('na3d_qk_with_bias', '0.15')
na1d = not_2d('na1d', '0.17+')
na3d = not_2d('na3d', '0.17+')
NeighborhoodAttention1D = not_2d('NeighborhoodAttention1D', '0.14+', 'natten')
NeighborhoodAttention3D = not_2d('NeighborhoodAttention3D', '0.15+', 'natten')

#: What ``import natten`` gives after ``install(api='0.17')``.
TOP_LEVEL = ('NeighborhoodAttention1D', 'NeighborhoodAttention2D', 'NeighborhoodAttention3D')
#: What ``natten.functional`` gives after ``install(api='0.17')``.
FUNCTIONAL = ('na2d_qk', 'na2d_av', 'na2d', 'natten2dqkrpb', 'natten2dqk', 'natten2dav',
              'na2d_qk_with_bias', 'natten1dqkrpb', 'natten1dqk', 'natten1dav', 'natten3dqkrpb',
              'natten3dqk', 'natten3dav', 'na1d_qk', 'na1d_av', 'na1d_qk_with_bias', 'na3d_qk',
              'na3d_av', 'na3d_qk_with_bias', 'na1d', 'na3d')
