from .preflight import (adapt_config_to_device, check_dataset_files, check_dataset_paths,
                        init_distributed, resolve_resume_checkpoint, shutdown_distributed)
from .runner import build_runner, load_config

__all__ = ['adapt_config_to_device', 'build_runner', 'check_dataset_files', 'check_dataset_paths',
           'init_distributed', 'load_config', 'resolve_resume_checkpoint', 'shutdown_distributed']
