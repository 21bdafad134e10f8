from .config import load_config
from .torch_load import allow_mmengine_checkpoints, mmengine_checkpoint_globals

__all__ = ['allow_mmengine_checkpoints', 'load_config', 'mmengine_checkpoint_globals']
