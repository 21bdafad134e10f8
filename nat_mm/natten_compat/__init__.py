"""NATTEN's own Python API, computed by nat_mm: code written for NATTEN runs unchanged.

- :mod:`.v0_17`: NATTEN 0.14 to 0.17.4 (``natten2dqkrpb`` / ``natten2dqk`` /
  ``natten2dav``, ``na2d_qk_with_bias``, ``na2d_qk`` / ``na2d_av`` / ``na2d``,
  ``NeighborhoodAttention2D``), with relative position bias;
- :mod:`.v0_20`: NATTEN 0.20+ (``na2d`` with ``stride`` and ``is_causal``,
  ``NeighborhoodAttention2D``), without.

The two ``na2d`` differ (the fifth argument is ``dilation`` in 0.17, ``stride`` in
0.20), so each lives in its module; the split functions, whose names exist in
0.14-0.17 only, are also here. :func:`install` makes ``import natten`` give one
of the two APIs where no NATTEN is installed (opt-in: ``import nat_mm`` does not
call it). Coverage, migration table and speed: docs/natten_compat.md.
"""
from . import v0_17, v0_20
from .install import install, uninstall
from .v0_17 import na2d_av, na2d_qk, natten2dav, natten2dqk, natten2dqkrpb

__all__ = ['install', 'uninstall', 'v0_17', 'v0_20', 'natten2dqkrpb', 'natten2dqk',
           'natten2dav', 'na2d_qk', 'na2d_av']
