"""What tools/train.py and tools/test.py do around MMEngine's Runner, by job:
dataset checks (:mod:`.datasets`), the checkpoint a resumed run loads
(:mod:`.resume`), the device and process group (:mod:`.distributed`), the
config and the Runner (:mod:`.runner`)."""
from .datasets import check_dataset_files, check_dataset_paths
from .distributed import adapt_config_to_device, init_distributed, shutdown_distributed
from .resume import resolve_resume_checkpoint
from .runner import build_runner, load_run_config

__all__ = ['adapt_config_to_device', 'build_runner', 'check_dataset_files', 'check_dataset_paths',
           'init_distributed', 'load_run_config', 'resolve_resume_checkpoint',
           'shutdown_distributed']
