"""NATTEN's argument forms, read into what nat_mm computes, and the refusals.

NATTEN 0.17 and later take ``kernel_size`` and ``dilation`` as an int or one
value per axis, and ``is_causal`` as a bool or one per axis; 0.20 adds
``stride``. nat_mm computes square, non-causal, stride-1 neighbourhoods: every
argument outside that raises :class:`NotImplementedError` naming the argument,
the NATTEN version that has it, and what to pass instead.
"""


def refuse(function, argument, value, feature, since, fix):
    """Raise the NotImplementedError of one NATTEN feature nat_mm does not compute."""
    raise NotImplementedError(
        f'{function}: {argument}={value!r}: {feature} (NATTEN {since}) is not implemented by '
        f'nat_mm.natten_compat; {fix}')


def one_per_map(function, argument, value):
    """``value`` (an int or a pair of equal ints, one per axis) as one int.

    Anything that is not a pair is returned as it is: :func:`nat_mm.na2d`
    then checks it (odd kernel >= 3, dilation >= 1) with its own messages.
    """
    if not isinstance(value, (tuple, list)):
        return value
    if len(value) != 2:
        raise ValueError(
            f'{function}: {argument} must be an int or one value per axis of the 2-D map '
            f'(a pair), got {value!r}')
    if value[0] != value[1]:
        refuse(function, argument, tuple(value), 'a different value per axis', '0.17+',
               f'pass one value for both axes ({argument}={value[0]} or {value[1]})')
    return value[0]


def window(function, kernel_size, dilation, is_causal=False):
    """(kernel_size, dilation) as ints; refuses causal masks and per-axis values."""
    causal = tuple(is_causal) if isinstance(is_causal, (tuple, list)) else (is_causal,)
    if any(causal):
        refuse(function, 'is_causal', is_causal, 'causal neighbourhood attention', '0.17+',
               'pass is_causal=False')
    return (one_per_map(function, 'kernel_size', kernel_size),
            one_per_map(function, 'dilation', dilation))


def no_stride(function, stride):
    """Refuses strided neighbourhoods (every query has its own window in nat_mm)."""
    if one_per_map(function, 'stride', stride) != 1:
        refuse(function, 'stride', stride, 'strided neighbourhood attention', '0.20+',
               'pass stride=1')


def no_additional_kv(function, since, **tensors):
    """Refuses ``additional_keys`` / ``additional_values`` that are not None."""
    for argument, tensor in tensors.items():
        if tensor is not None:
            refuse(function, argument, f'<{type(tensor).__name__}>',
                   'attention to additional keys and values', since,
                   f'pass {argument}=None (nat_mm attends to the neighbourhood only)')


def not_2d(name, since, module='natten.functional'):
    """A stand-in for NATTEN's 1-D / 3-D function or module ``module.name``:
    calling it raises NotImplementedError (nat_mm computes 2-D neighbourhoods only)."""
    dims = '1-D' if '1d' in name.lower() else '3-D'

    def unsupported(*args, **kwargs):
        raise NotImplementedError(
            f'{module}.{name} (NATTEN {since}): {dims} neighbourhood attention is not '
            'implemented by nat_mm.natten_compat, which has the 2-D operators only; use '
            'NATTEN itself for it')
    unsupported.__name__ = unsupported.__qualname__ = name
    unsupported.__doc__ = f'NATTEN {since} {name}: refused ({dims}; nat_mm is 2-D only).'
    return unsupported
