# The training hooks every nat_mm config adds to its MMDetection / MMSegmentation runtime
# (nat_mm/launch/hooks.py), taken with
#   _base_ = [..., './nat_runtime.py']
#   custom_imports = dict(imports=['nat_mm', 'nat_mm.launch.hooks'], ...)
#   custom_hooks = {{_base_.nat_custom_hooks}}
# - FiniteLossHook: stop at the first iteration whose loss is NaN or inf, naming it, before
#   that step's weights are saved;
# - RNGStateHook: torch's random-number state in every checkpoint, restored on --resume (a
#   resumed iteration-based run continues as the uninterrupted one).
nat_custom_hooks = [dict(type='FiniteLossHook'), dict(type='RNGStateHook')]
